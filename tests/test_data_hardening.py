"""Issue 15's data repros: files given twice, group names, success values, readers that
outlive their parent, SIGTERM during a load, and loading progress."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from rollfit.data import progress as progress_mod
from rollfit.data import reader
from rollfit.data.reader import expand_paths, load_rollouts
from rollfit.data.synthetic import COT_ATTR, COT_STD_ATTR, write_rollout_file
from rollfit.errors import DataError, LoadInterrupted

IN = ["gait_cadence", "gait_stride"]
OUT = ["cot_ma15"]
ROOT = Path(__file__).resolve().parents[1]


def _file(path: Path, n: int = 6) -> Path:
    x = np.random.default_rng(0).uniform(0.7, 1.3, (n, 13))
    return write_rollout_file(path, x, {COT_ATTR: 50 + x[:, 0], COT_STD_ATTR: x[:, 1]})


def _load(path, **kw):
    kw.setdefault("cache", False)
    return load_rollouts(path, IN, OUT, **kw)


# ----------------------------------------------------------------------------- one file, one load
@pytest.mark.parametrize("spelling", ["symlink", "hardlink", "dotdot"])
def test_a_file_given_twice_is_loaded_once_with_a_warning(tmp_path, spelling):
    path = _file(tmp_path / "r.h5")
    (tmp_path / "a").mkdir()
    other = {"symlink": tmp_path / "link.h5", "hardlink": tmp_path / "hard.h5",
             "dotdot": tmp_path / "a" / ".." / "r.h5"}[spelling]
    if spelling == "symlink":
        other.symlink_to(path)
    elif spelling == "hardlink":
        os.link(path, other)
    with pytest.warns(UserWarning) as rec:
        table = _load([path, other])
    assert len(table) == 6 and table.files == [str(path)]
    messages = [str(r.message) for r in rec if "expected each rollout file once" in str(r.message)]
    assert messages == [f"{other}: expected each rollout file once, but got the same file as {path} "
                        "(a link or another spelling of its path); loading it once"]


def test_a_folder_and_its_file_given_together_are_one_file(tmp_path):
    path = _file(tmp_path / "rollout_data.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert expand_paths([path, path]) == [path]  # the same spelling twice: no warning needed
    with pytest.warns(UserWarning, match="expected each rollout file once"):
        (tmp_path / "a").mkdir()
        assert expand_paths([tmp_path, tmp_path / "a" / ".." / "rollout_data.h5"]) == [path]


# ----------------------------------------------------------------------------- group names
def test_param_3_and_param_3_0_are_the_same_group_twice(tmp_path):
    path = _file(tmp_path / "r.h5", n=4)
    with h5py.File(path, "a") as f:
        f.copy("param_3", "param_3.0")
    with pytest.raises(DataError) as exc:
        _load(path)
    assert str(exc.value) == (f"{path}: expected each group index once, but got param_3 and param_3.0 "
                              "(both group 3); remove or rename one")


def test_leading_zeros_name_the_same_group(tmp_path):
    path = _file(tmp_path / "r.h5", n=4)
    with h5py.File(path, "a") as f:
        f.copy("param_2", "param_002")
    with pytest.raises(DataError, match="but got param_002 and param_2 \\(both group 2\\)"):
        _load(path)


@pytest.mark.parametrize("digits", [23, 5000])
def test_a_huge_group_index_is_one_line(tmp_path, digits):
    path = _file(tmp_path / "r.h5", n=2)
    with h5py.File(path, "a") as f:
        f.copy("param_1", "param_" + "9" * digits)
    with pytest.raises(DataError) as exc:
        _load(path)
    assert str(exc.value) == (f"{path}: {('param_' + '9' * digits)[:40]}: expected a group index of at most 9223372036854775807, "
                              f"but got a {digits}-digit index")


def test_the_largest_int64_index_still_reads(tmp_path):
    path = _file(tmp_path / "r.h5", n=2)
    with h5py.File(path, "a") as f:
        f.move("param_1", f"param_{2**63 - 1}")
    assert _load(path).param_idx.tolist() == [0, 2**63 - 1]


# ----------------------------------------------------------------------------- success values
@pytest.mark.parametrize("value, shown", [(np.float64(np.nan), "nan"), (np.float32(np.inf), "inf"),
                                          (np.array([0.5]), "0.5")])
def test_success_that_is_not_boolean_like_is_an_error(tmp_path, value, shown):
    path = _file(tmp_path / "r.h5", n=3)
    with h5py.File(path, "a") as f:
        f["param_1"].attrs["success"] = value
    with pytest.raises(DataError) as exc:
        _load(path)
    assert str(exc.value) == (f"{path}: param_1: expected attribute 'success' to be true/false or a whole number, "
                              f"but got {shown}")


# ----------------------------------------------------------------------------- processes
SCRIPT = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {src!r})
from rollfit.data import reader
from rollfit.errors import RollfitError

OUT = Path({out!r})

def slow(task):
    (OUT / f"worker-{{os.getpid()}}").write_text("")
    time.sleep(60)

if __name__ == "__main__":
    if {forkserver!r}:
        reader.threading.active_count = lambda: 2
    reader.PARALLEL_MIN_GROUPS, reader.MIN_CHUNK_GROUPS = 10, 7
    reader.read_chunk = slow
    try:
        reader.load_rollouts({path!r}, ["gait_cadence", "gait_stride"], ["cot_ma15"], cache=False, workers=2)
    except RollfitError as exc:
        print(f"error: {{exc}}", file=sys.stderr)
        sys.exit(exc.exit_code)
"""


def _start_loader(tmp_path: Path, forkserver: bool = False) -> tuple[subprocess.Popen, list[int]]:
    """A process loading with two slow readers; returns it once both readers run, and their pids."""
    out = tmp_path / "pids"
    out.mkdir()
    script = tmp_path / "load.py"
    script.write_text(SCRIPT.format(src=str(ROOT / "src"), out=str(out), forkserver=forkserver,
                                    path=str(_file(tmp_path / "r.h5", n=40))))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(out.iterdir())) < 2:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "readers did not start"
        time.sleep(0.05)
    return proc, [int(p.name.split("-")[1]) for p in out.iterdir()]


def _gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                with open(f"/proc/{pid}/stat") as fh:  # a zombie awaiting its reaper counts as gone
                    alive += [pid] if fh.read().split(")")[-1].split()[0] != "Z" else []
            except (ProcessLookupError, FileNotFoundError):
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and fork")


@linux_only
@pytest.mark.parametrize("forkserver", [False, True])
def test_readers_die_when_their_parent_is_killed(tmp_path, forkserver):
    proc, pids = _start_loader(tmp_path, forkserver)
    proc.kill()
    proc.wait(timeout=10)
    survivors = pids if not _gone(pids) else []
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "reader processes outlived a SIGKILLed parent"


@linux_only
def test_sigterm_during_a_load_is_one_line_and_stops_the_readers(tmp_path):
    proc, pids = _start_loader(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert err.strip().splitlines() == [f"error: {tmp_path / 'r.h5'}: expected to finish loading, but got SIGTERM; "
                                        "stopped, nothing was written"]
    assert _gone(pids)


def test_sigterm_handler_is_restored_after_a_load(tmp_path):
    _load(_file(tmp_path / "r.h5"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_load_interrupted_exit_code():
    assert LoadInterrupted("x", signal.SIGTERM).exit_code == 143


# ----------------------------------------------------------------------------- progress
def test_progress_shows_files_rate_and_eta_on_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress_mod, "DELAY_S", 0)
    files = [_file(tmp_path / f"{k}.h5", n=30) for k in range(3)]
    _load(files, progress=True)
    err = capsys.readouterr().err
    assert "loading rollouts" in err and "files 3/3" in err and "groups/s" in err and "<" in err  # tqdm's ETA


def test_progress_is_quiet_when_off_or_quick(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress_mod, "DELAY_S", 0)
    path = _file(tmp_path / "r.h5")
    _load(path, progress=False)
    monkeypatch.setenv("ROLLFIT_PROGRESS", "0")
    _load(path)
    monkeypatch.delenv("ROLLFIT_PROGRESS")
    monkeypatch.setattr(progress_mod, "DELAY_S", 1.0)
    _load(path)  # quick, and stderr is not a terminal: nothing
    assert capsys.readouterr().err == ""


def test_progress_counts_parallel_chunks_and_files(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "PARALLEL_MIN_GROUPS", 10)
    monkeypatch.setattr(reader, "MIN_CHUNK_GROUPS", 7)
    files = [_file(tmp_path / f"{k}.h5", n=30) for k in range(2)]
    seen = []
    monkeypatch.setattr(progress_mod.LoadProgress, "advance", lambda self, g, f=0: seen.append((g, f)))
    _load(files, workers=2)
    assert sum(g for g, _ in seen) == 60 and sum(f for _, f in seen) == 2 and len(seen) > 2


def test_inspect_scan_shows_progress_too(tmp_path, monkeypatch, capsys):
    from rollfit.data.inspect import summarize_rollouts

    monkeypatch.setattr(progress_mod, "DELAY_S", 0)
    summary = summarize_rollouts([_file(tmp_path / f"{k}.h5", n=20) for k in range(2)], IN, OUT, progress=True)
    err = capsys.readouterr().err
    assert summary["groups"] == 40 and "scanning rollouts" in err and "files 2/2" in err
