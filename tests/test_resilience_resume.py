"""Exact resume: SIGKILL at random moments, SIGINT, corrupt checkpoints, refused resumes, fine-tuning.

The reference is one uninterrupted in-process run; killed runs are real ``python -m rollfit
train`` subprocesses, resumed in-process. On CPU the resumed run must end with the same
weights, bit for bit, and the same log rows (timestamps aside). Subprocesses and this
process use one torch thread each, so both compute with the same kernels.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import demo_config
import torch
import yaml

from rollfit.cli.main import main
from rollfit.config import load_config, validate
from rollfit.errors import CheckpointError, ConfigError, DataError
from rollfit.runs.checkpoint import (RESUME_KEYS, checkpoint_name, find_resume_checkpoint, list_checkpoints,
                                         load_checkpoint, load_model)
from rollfit.training.logger import find_log, read_rows
from rollfit.pipeline.run import resume, train
from rollfit.training.state import capture_rng, restore_rng

EPOCHS = 60
# 220 training rows in 3 shuffled batches per epoch (the shuffling generator matters on resume);
# lr_patience=2: the plateau scheduler cuts the lr within the run (its state matters too)
ARGS = [f"trainer.max_epochs={EPOCHS}", "trainer.save_period=3", "trainer.log_period=2", "trainer.progress=false",
        "trainer.report=false", "data.batch_size=100", "data.train_split=0.8", "model.layers=[8,8]",
        "trainer.lr=0.01", "trainer.lr_patience=2", "data.cache=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(demo_file, *extra):
    return demo_config(demo_file, ARGS + list(extra))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_file):
    """The uninterrupted run every resumed run must reproduce."""
    return train(_cfg(demo_file), tmp_path_factory.mktemp("ref") / "run").run_dir


def _weights(run_dir: Path, epoch: int = EPOCHS - 1) -> dict[str, torch.Tensor]:
    return load_checkpoint(Path(run_dir) / "checkpoints" / checkpoint_name(epoch))["model_state_dict"]


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timestamp"} for r in read_rows(find_log(run_dir))]


def _assert_same_run(run_dir: Path, ref: Path) -> None:
    a, b = _weights(run_dir), _weights(ref)
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"weights differ from the uninterrupted run: {differing}"
    assert _rows(run_dir) == _rows(ref)


def _spawn(demo_file, run_dir: Path, *extra: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rollfit", "train", "--hdf5", str(demo_file), "--output", str(run_dir), *ARGS, *extra]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _signal_each_after_its_target(trials, timeout: float = 180.0) -> None:
    """Send each trial's signal ``delay`` seconds after its target checkpoint appears; all are
    polled together, so one slow trial does not let the others run to their end."""
    send_at: dict[int, float] = {}
    pending = set(range(len(trials)))
    end = time.monotonic() + timeout
    while pending:
        assert time.monotonic() < end, "the training subprocesses did not reach their checkpoints"
        now = time.monotonic()
        for i in sorted(pending):
            t = trials[i]
            if i not in send_at and (t["target"].exists() or t["proc"].poll() is not None):
                send_at[i] = now + t["delay"]
            if i in send_at and now >= send_at[i]:
                t["proc"].send_signal(t["signal"])
                t["code"] = t["proc"].wait(timeout=timeout)
                pending.discard(i)
        time.sleep(0.002)


@pytest.fixture(scope="module")
def signalled(tmp_path_factory, demo_file):
    """Four real training subprocesses started together (their interpreter start-up overlaps):
    three SIGKILLed at random moments, one sent SIGINT early in a long run."""
    base = tmp_path_factory.mktemp("signalled")
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    trials = []
    for i in range(3):
        run = base / f"killed{i}"
        epoch = 3 * rng.randrange(0, 12)
        trials.append({"run": run, "target": run / "checkpoints" / checkpoint_name(epoch),
                       "delay": rng.uniform(0, 0.08), "signal": signal.SIGKILL, "out": base / f"out{i}.txt",
                       "seed": seed})
    trials.append({"run": base / "interrupted", "target": base / "interrupted" / "checkpoints" / checkpoint_name(3),
                   "delay": 0.0, "signal": signal.SIGINT, "out": base / "out_int.txt", "seed": seed})
    for t in trials:
        extra = ["trainer.max_epochs=100000"] if t["signal"] == signal.SIGINT else []
        t["proc"] = _spawn(demo_file, t["run"], *extra, log=t["out"])
    _signal_each_after_its_target(trials)
    return trials


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.startswith(".rollfit-probe."))


def _check_every_file_is_complete(run_dir: Path) -> None:
    """Each file a killed run left (temporary files aside) is whole and loadable."""
    for p in sorted(run_dir.rglob("*")):
        if p.is_dir() or _is_temp(p):
            continue
        if p.suffix == ".ckpt":
            ckpt = load_checkpoint(p)
            assert p.name == "best.ckpt" or all(k in ckpt for k in RESUME_KEYS), p  # best: weights + config
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.name == "config.yaml":
            validate(yaml.safe_load(p.read_text()))
        elif p.name == "rollfit.lock":  # a killed holder's lock: its pid (or empty), taken over later
            assert p.read_text().strip().isdigit() or not p.read_text(), p
        else:
            pytest.fail(f"unexpected file {p}")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(signalled, reference):
    for t in signalled[:3]:
        run = t["run"]
        note = (f"random seed {t['seed']}: killed {t['delay']:.3f}s after {t['target'].name}; output:\n"
                f"{t['out'].read_text()[-2000:]}")
        assert t["code"] == -signal.SIGKILL or t["code"] == 0, note
        _check_every_file_is_complete(run)
        assert list_checkpoints(run), note
        result = resume(run)
        assert not [p for p in run.rglob("*") if _is_temp(p)], note
        _check_every_file_is_complete(run)
        assert result.last_checkpoint.name == checkpoint_name(EPOCHS - 1)
        _assert_same_run(run, reference)


@pytest.mark.slow
def test_sigint_writes_a_checkpoint_and_says_how_to_resume(signalled, reference):
    t = signalled[3]
    run = t["run"]
    out = t["out"].read_text()
    assert t["code"] == 130, out
    ckpts = list_checkpoints(run)
    epoch = int(ckpts[-1].stem[3:])
    assert epoch < EPOCHS - 1, "the run went too far before the signal was handled to compare it"
    assert (f"rollfit train: interrupted by SIGINT after epoch {epoch}; checkpoint written: {ckpts[-1]}; "
            f"resume with: rollfit train --resume {run.resolve()}") in out
    assert read_rows(find_log(run))[-1]["step"] <= epoch
    # the printed command, with a shorter run, ends where the reference ended
    assert main(["train", "--resume", str(run.resolve()), f"trainer.max_epochs={EPOCHS}"]) == 0
    _assert_same_run(run, reference)
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == EPOCHS


def test_resume_from_every_checkpoint_kind(tmp_path, demo_file, reference):
    """From a run folder whose newest checkpoint is damaged, and from an explicit older file."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for p in list_checkpoints(run):
        if int(p.stem[3:]) > 30:
            p.unlink()
    (run / "checkpoints" / checkpoint_name(30)).write_bytes(b"not a checkpoint")
    path, ckpt = find_resume_checkpoint(run)
    assert path.name == checkpoint_name(27) and ckpt["epoch"] == 27
    assert resume(run).resumed_from.name == checkpoint_name(27)
    _assert_same_run(run, reference)
    # an explicit checkpoint restarts there; later checkpoints are rewritten identically
    resume(run / "checkpoints" / checkpoint_name(9))
    _assert_same_run(run, reference)


@pytest.mark.parametrize("engine", ["reference", "eager", "auto"])
def test_resume_is_exact_with_every_cpu_step_engine(tmp_path, demo_file, engine):
    cfg = _cfg(demo_file, "trainer.max_epochs=20", f"trainer.engine={engine}")
    ref = train(cfg, tmp_path / "ref").run_dir
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    for p in list_checkpoints(run):
        if int(p.stem[3:]) > 9:
            p.unlink()
    resume(run)
    a, b = _weights(run, 19), _weights(ref, 19)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(run) == _rows(ref)


def test_resuming_a_finished_run_trains_nothing(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    result = resume(run)
    assert result.resumed_from.name == checkpoint_name(EPOCHS - 1)
    assert result.metrics["loss/val"] == read_rows(find_log(reference))[-1]["loss/val"]
    _assert_same_run(run, reference)


def test_incompatible_resume_is_refused_with_the_differing_keys(tmp_path, reference):
    ckpt = reference / "checkpoints" / checkpoint_name(EPOCHS - 1)
    with pytest.raises(ConfigError) as err:
        resume(reference, ["model.layers=[16,8]", "data.split_seed=3", "trainer.lr=0.5", "trainer.max_epochs=90"])
    assert str(err.value) == (
        f"{ckpt}: expected the run's own settings when resuming, but got changes to "
        "data.split_seed (0 -> 3), model.layers ([8, 8] -> [16, 8]), trainer.lr (0.01 -> 0.5); start a new run or "
        "fine-tune with --init-from (a resume may change only trainer.max_epochs, trainer.log_period, "
        "trainer.save_period, trainer.checkpoint_every_minutes, trainer.keep_last, trainer.progress, "
        "trainer.report, trainer.on_nonfinite, trainer.device, trainer.engine, trainer.threads, trainer.deterministic, "
        "data.hdf5_path, data.cache, data.cache_dir, data.workers)")


def test_resume_on_other_data_is_refused(tmp_path, reference):
    from rollfit.data.synthetic import make_demo_file

    other = make_demo_file(tmp_path / "other.h5", n=300, seed=1)
    ckpt = reference / "checkpoints" / checkpoint_name(EPOCHS - 1)
    pattern = (r": expected the rows the run was trained on, but the data changed "
               r"\(.*sha256 [0-9a-f]{12} -> [0-9a-f]{12}\); start a new run or fine-tune with --init-from$")
    with pytest.raises(DataError, match="^" + re.escape(str(ckpt)) + pattern):
        resume(reference, hdf5=str(other))


def test_cli_resume_errors_are_one_line(tmp_path, reference, capsys):
    assert main(["train", "--resume", str(reference), "--output", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == (f"rollfit train: error: --output: expected no --output with --resume (a resumed "
                                       f"run continues in its own folder), but got '{tmp_path / 'x'}'\n")
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err == (f"rollfit train: error: {tmp_path / 'nothing'}: expected a run folder or a "
                                       f"checkpoint file, but it does not exist\n")
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "checkpoints" / checkpoint_name(0)).write_bytes(b"\0" * 10)
    assert main(["train", "--resume", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rollfit train: error: {empty}: expected a complete checkpoint in checkpoints/ to resume "
                          f"from, but skipped ep_000000.ckpt (expected a torch checkpoint, but it could not be read")
    assert err.count("\n") == 1


def test_original_runs_cannot_resume_but_can_be_fine_tuned(tmp_path, fixtures_dir):
    original = fixtures_dir / "reference_run"
    ckpt = list_checkpoints(original)[-1]
    with pytest.raises(CheckpointError) as err:
        resume(original)
    assert str(err.value) == (f"{original}: expected a complete checkpoint in checkpoints/ to resume from, but "
                              f"skipped {ckpt.name} (expected a rollfit training checkpoint with trainer_state, but "
                              f"it is missing; use --init-from to fine-tune from its weights instead)")
    cfg = load_config(None, ["trainer.max_epochs=3", "trainer.lr=1e-9", "trainer.progress=false",
                             "trainer.report=false", "data.cache=false"])
    cfg.data.hdf5_path = str(fixtures_dir / "rollouts" / "u225.h5")
    result = train(cfg, tmp_path / "tuned", init_from=original)
    model, mcfg, _ = load_model(result.run_dir)
    assert mcfg["target_convention"] == "raw" and mcfg["init_from"] == str(ckpt.resolve())
    assert mcfg["layers"] == [64, 32] and cfg.model.layers == [64, 32]
    ref = np.load(fixtures_dir / "reference_run" / "expected_predictions.npz")
    with torch.no_grad():
        y = model(torch.as_tensor(ref["X"], dtype=torch.float32)).numpy()
    np.testing.assert_allclose(y, ref["Y"], rtol=1e-4)  # lr 1e-9: the original weights, barely moved
    opt = load_checkpoint(result.last_checkpoint)["optimizer_state_dict"]
    assert float(opt["state"][0]["step"]) == 3  # a fresh optimizer: one full-batch step per epoch


def test_init_from_refuses_a_conflicting_architecture(tmp_path, demo_file, reference):
    cfg = load_config(None, ["model.layers=[32]", "trainer.max_epochs=2", "trainer.progress=false"])
    cfg.data.hdf5_path = str(demo_file)
    ckpt = reference / "checkpoints" / "best.ckpt"  # a run folder means its best.ckpt
    with pytest.raises(ConfigError) as err:
        train(cfg, tmp_path / "x", init_from=reference)
    assert str(err.value) == (f"--init-from {ckpt}: expected the checkpoint's architecture and labels, but the "
                              f"config sets model.layers=[32] (checkpoint: [8, 8]); drop these keys to use the "
                              f"checkpoint's")


def test_same_seed_same_log_and_weights_other_seed_differs(tmp_path, demo_file):
    runs = [train(_cfg(demo_file, "trainer.max_epochs=12", f"trainer.seed={s}"), tmp_path / f"r{i}").run_dir
            for i, s in enumerate((5, 5, 6))]
    assert _rows(runs[0]) == _rows(runs[1])
    w = [_weights(r, 11) for r in runs]
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert _rows(runs[0]) != _rows(runs[2])


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random as pyrandom

    torch.manual_seed(1)
    np.random.seed(2)
    pyrandom.seed(3)
    pyrandom.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), pyrandom.random(), pyrandom.gauss(0, 1))
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), pyrandom.random(), pyrandom.gauss(0, 1))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2:] == got[2:]
