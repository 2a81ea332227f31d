"""Generated files and byte-flipped copies: the reader returns a table or raises a RollfitError.

Generated files also have a known truth: a small model of the reader's rules (``_expected``)
says whether the load must fail and, if not, which rows it must return.
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollfit.data.reader import load_rollouts
from rollfit.data.synthetic import COT_ATTR, DEFAULT_13_NAMES, write_rollout_file
from rollfit.data.table import RolloutTable
from rollfit.errors import RollfitError

IN = ["gait_cadence", "gait_stride"]
SUCCESS = ["true", "false", "absent", "uint8_1", "uint8_0", "int_1", "float_0", "string", "array2"]
OUTPUT = ["f32", "f64arr", "int", "missing", "string", "array2", "nan", "inf"]
STATE = ["ok", "missing", "short", "nan_used", "nan_unused", "long"]
# ROLLFIT_FUZZ_EXAMPLES=2000 runs a longer, random fuzz; by default a fixed, quick set.
EXAMPLES = int(os.environ.get("ROLLFIT_FUZZ_EXAMPLES", "40"))
FAST = settings(max_examples=EXAMPLES, deadline=None, derandomize="ROLLFIT_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="damaged files are read in forked children")


@dataclass
class Group:
    index: int
    success: str
    output: str
    state: str
    dotted: bool


def _success_value(kind: str):
    return {"true": np.bool_(True), "false": np.bool_(False), "uint8_1": np.array([1], np.uint8),
            "uint8_0": np.array([0], np.uint8), "int_1": np.int64(1), "float_0": np.float64(0.0),
            "string": "yes", "array2": np.array([1, 1], np.uint8)}[kind]


def _output_value(kind: str, value: float):
    return {"f32": np.float32(value), "f64arr": np.array([value]), "int": np.int64(round(value)),
            "string": "fast", "array2": np.array([value, value]), "nan": np.float32(np.nan),
            "inf": np.float64(-np.inf)}[kind]


def _state_value(kind: str, row: np.ndarray, names: list[str]) -> np.ndarray:
    row = row.copy()
    if kind == "nan_used":
        row[names.index("gait_cadence")] = np.nan
    elif kind == "nan_unused":
        row[names.index("torso_mass")] = np.inf
    return {"short": row[:12], "long": np.append(row, 1.0)}.get(kind, row)


def _write(path: Path, groups: list[Group], names: list[str]) -> dict[int, tuple[np.ndarray, float]]:
    """Write the generated file; return each group's true (param_state, output)."""
    truth = {}
    with h5py.File(path, "w") as f:
        f["parameter_names"] = np.array([n.encode() for n in names], dtype="S32")
        for g in groups:
            state = np.linspace(0.7, 1.3, 13).astype(np.float32) + np.float32(g.index / 1000)
            value = 50.0 + g.index
            grp = f.create_group(f"param_{g.index}" + (".0" if g.dotted else ""))
            if g.success != "absent":
                grp.attrs["success"] = _success_value(g.success)
            if g.output != "missing":
                grp.attrs[COT_ATTR] = _output_value(g.output, value)
            if g.state != "missing":
                grp.create_dataset("param_state", data=_state_value(g.state, state, names), compression="gzip")
            truth[g.index] = (state, value)  # integral, so every numeric kind stores it exactly
    return truth


def _expected(groups: list[Group], on_missing: str, on_nonfinite: str):
    """The reader's rules in miniature: None (must raise) or (kept indices, failed, skipped)."""
    kept, failed, skipped = [], 0, 0
    for g in sorted(groups, key=lambda g: g.index):
        if g.success in ("string", "array2"):
            return None
        if g.success in ("false", "uint8_0", "float_0"):
            failed += 1
            continue
        if g.output in ("string", "array2"):
            return None
        if g.output == "missing" or g.state in ("missing", "short", "long"):
            problem = on_missing
        elif g.output in ("nan", "inf") or g.state == "nan_used":
            problem = on_nonfinite
        else:
            kept.append(g.index)
            continue
        if problem == "error":
            return None
        skipped += 1
    return (kept, failed, skipped) if kept else None


groups_st = st.lists(
    st.builds(Group, st.integers(0, 300), st.sampled_from(SUCCESS), st.sampled_from(OUTPUT),
              st.sampled_from(STATE), st.booleans()),
    min_size=1, max_size=7, unique_by=lambda g: g.index)


@FAST
@given(groups=groups_st, names=st.permutations(DEFAULT_13_NAMES),
       on_missing=st.sampled_from(["error", "skip"]), on_nonfinite=st.sampled_from(["error", "skip"]))
def test_generated_files_match_the_rules(tmp_path_factory, groups, names, on_missing, on_nonfinite):
    path = tmp_path_factory.mktemp("gen") / "g.h5"
    truth = _write(path, groups, list(names))
    want = _expected(groups, on_missing, on_nonfinite)
    try:
        t = load_rollouts(path, IN, ["cot_ma15"], on_missing=on_missing, on_nonfinite=on_nonfinite,
                          cache=False, workers=1)
    except RollfitError as exc:
        assert want is None, f"unexpected error: {exc}"
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert want is not None, "expected an error, got a table"
    kept, failed, skipped = want
    assert t.param_idx.tolist() == kept
    assert (t.n_failed, t.n_skipped, t.n_groups) == (failed, skipped, len(groups))
    col = {n: i for i, n in enumerate(names)}
    for row, idx in enumerate(kept):
        state, value = truth[idx]  # state is in the file's parameter order
        assert t.inputs[row].tolist() == [state[col[n]] for n in IN]
        assert t.targets[row, 0] == np.float32(value)


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, mask in flips:
        b[pos % len(b)] ^= mask
    return bytes(b)


def _in_child(fn: Callable[[], None], timeout: float = 30.0) -> str:
    """Run ``fn`` in a forked child: "ok", or what went wrong (exception, crash, hang).

    A damaged file could make the HDF5 C library crash or loop; in a child, that fails
    this test with a message instead of killing or freezing the whole test run.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            fn()
            msg = "ok"
        except BaseException as exc:  # reported to the parent, which fails the test
            msg = f"{type(exc).__name__}: {exc}"
        os.write(w, msg.encode()[:4000])
        os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            with os.fdopen(r, "rb") as fh:
                out = fh.read().decode()
            return out if os.WIFEXITED(status) else f"crash (signal {os.WTERMSIG(status)})"
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
    return f"hang (over {timeout} s)"


def _check_flipped(path: Path, data: bytes, flips, cache_dir: Path) -> None:
    """Load a damaged copy: a table or a one-line RollfitError, never anything else."""
    path.write_bytes(_flip(data, flips))

    def load() -> None:
        try:
            t = load_rollouts(path, IN, ["cot_ma15"], on_missing="skip", on_nonfinite="skip",
                              cache_dir=cache_dir, workers=1)
        except RollfitError as exc:
            assert "\n" not in str(exc), str(exc)
        else:
            assert isinstance(t, RolloutTable) and len(t) > 0
    assert _in_child(load) == "ok", flips


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> bytes:
    """A small real-format file (with cycle data) to damage."""
    rng = np.random.default_rng(0)
    path = write_rollout_file(tmp_path_factory.mktemp("base") / "b.h5", rng.uniform(0.7, 1.3, (6, 13)),
                              {COT_ATTR: rng.uniform(50, 90, 6)}, np.array([1, 1, 0, 1, 1, 1], bool),
                              with_cycles=True, cycle_shape=(4, 3))
    return path.read_bytes()


flips_st = st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), min_size=1, max_size=8)
# Metadata (superblock, object headers, B-trees, heaps) sits mostly near the start of small files.
early_flips_st = st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 255)), min_size=1, max_size=4)


@needs_fork
@FAST
@given(flips=st.one_of(flips_st, early_flips_st))
def test_byte_flipped_small_file(tmp_path_factory, small_file, flips):
    d = tmp_path_factory.mktemp("flip")
    _check_flipped(d / "f.h5", small_file, flips, d / "cache")


@needs_fork
@FAST
@given(flips=st.one_of(flips_st, early_flips_st))
@pytest.mark.slow
def test_byte_flipped_fixture(tmp_path_factory, fixtures_dir, flips):
    d = tmp_path_factory.mktemp("flipfx")
    data = (fixtures_dir / "rollouts" / "u225_cstyle.h5").read_bytes()
    _check_flipped(d / "f.h5", data, flips, d / "cache")


@FAST
@given(cut=st.floats(0.0, 0.999))
def test_truncated_copies(tmp_path_factory, small_file, cut):
    d = tmp_path_factory.mktemp("cut")
    (d / "t.h5").write_bytes(small_file[: int(len(small_file) * cut)])
    with pytest.raises(RollfitError):
        load_rollouts(d / "t.h5", IN, ["cot_ma15"], cache=False, workers=1)


def test_copy_of_fixture_untouched_loads(tmp_path, fixtures_dir):
    shutil.copyfile(fixtures_dir / "rollouts" / "u225_cstyle.h5", tmp_path / "c.h5")
    assert len(load_rollouts(tmp_path / "c.h5", IN, ["cot_ma15"], cache=False)) == 205
