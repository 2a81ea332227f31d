"""Divergence (stop, rollback), disk trouble, signals in-process, time-based checkpoints, keep_last.

Everything here runs in-process on tiny configs (one torch thread, a few dozen epochs).
The divergent config is real: Adam's first step moves every weight by about lr, so with
lr = 1.6e9 the validation MSE overflows float32 in epoch 0 (measured: lr <= 5e8 trains 20
epochs without overflow, lr >= 6e8 overflows at once); rollbacks halve it to 8e8 (still
divergent) and 4e8 (trains).
"""
from __future__ import annotations

import errno
import os
import signal
import re
import warnings
from pathlib import Path

import pytest
from conftest import demo_config
import torch

import rollfit.io
import rollfit.training.trainer as trainer_mod
from rollfit.cli.main import main
from rollfit.errors import OutputError, TrainingError
from rollfit.runs import checkpoint as ckpt_io
from rollfit.runs.checkpoint import checkpoint_name, list_checkpoints, load_checkpoint
from rollfit.training.logger import SimpleLogger, find_log, read_rows
from rollfit.pipeline.run import load_table, make_data, resume, train
from rollfit.training.signals import TrainingInterrupted
from rollfit.training.step import as_dict, batch_loop
from rollfit.training.trainer import Trainer

FULL_BATCH = ["data.batch_size=65536", "data.train_split=1.0"]  # as the divergence thresholds were measured
BASE = ["trainer.progress=false", "trainer.report=false", "data.cache=false", "model.layers=[8]", "trainer.lr=0.01",
        "trainer.log_period=1", "data.batch_size=100", "data.train_split=0.8"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(demo_file, *extra):
    return demo_config(demo_file, BASE + list(extra))


def _epochs(run: Path) -> list[int]:
    return [int(p.stem[3:]) for p in list_checkpoints(run)]


def _temp_files(run: Path) -> list[Path]:
    return [p for p in run.rglob(".*") if p.is_file()]


# ---- divergence -------------------------------------------------------------------------
def test_divergence_stops_with_epoch_component_and_checkpoint(tmp_path, demo_file):
    with pytest.raises(TrainingError) as err:
        train(_cfg(demo_file, *FULL_BATCH, "trainer.lr=1.6e9", "trainer.max_epochs=20"), tmp_path / "run")
    assert str(err.value) == ("epoch 0: expected finite losses, but got loss/val=inf; no checkpoint written yet; "
                              "lower trainer.lr or set trainer.on_nonfinite=rollback")
    assert _epochs(tmp_path / "run") == []


def test_rollback_halves_the_lr_until_the_run_trains(tmp_path, demo_file):
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(_cfg(demo_file, *FULL_BATCH, "trainer.lr=1.6e9", "trainer.max_epochs=20", "trainer.save_period=5",
                   "trainer.on_nonfinite=rollback"), run)
    rolled = [str(w.message) for w in caught if "rolled back" in str(w.message)]
    assert rolled == [
        "epoch 0: expected finite losses, but got loss/val=inf; no checkpoint written yet; rolled back to the "
        "initial state and halved the lr to 8e+08 (rollback 1 of 3)",
        "epoch 0: expected finite losses, but got loss/val=inf; no checkpoint written yet; rolled back to the "
        "initial state and halved the lr to 4e+08 (rollback 2 of 3)"]
    rows = read_rows(find_log(run))
    assert [r["step"] for r in rows] == list(range(20)) and rows[0]["lr"] == 4e8
    assert all(all(torch.isfinite(v).all() for v in load_checkpoint(p)["model_state_dict"].values())
               for p in list_checkpoints(run))
    assert load_checkpoint(list_checkpoints(run)[-1])["trainer_state"]["rollbacks"] == 2


def test_rollback_gives_up_after_three(tmp_path, demo_file):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingError) as err:
            train(_cfg(demo_file, *FULL_BATCH, "trainer.lr=1e30", "trainer.max_epochs=5",
                       "trainer.on_nonfinite=rollback"), tmp_path / "run")
    # lr 1e30 overflows: the fused engine's validation loss comes out nan, the eager one's inf
    assert re.fullmatch(r"epoch 0: expected finite losses, but got loss/val=(inf|nan); no checkpoint written yet; "
                        r"gave up after 3 rollbacks \(lr 1\.25e\+29\); lower trainer\.lr", str(err.value))


class _Poisoned:
    """An engine that fills one weight with NaN after the first update of ``epoch`` (once)."""

    def __init__(self, engine, model, epoch):
        self.engine, self.model, self.epoch = engine, model, epoch

    def step(self, x, yn, epoch):
        out = self.engine.step(x, yn, epoch)
        self._maybe_poison(epoch)
        return out

    def batch(self, x, yn, idx, epoch):
        out = self.engine.batch(x, yn, idx, epoch)
        self._maybe_poison(epoch)
        return out

    def train_epoch(self, x, yn, epoch, batch_size, generator):
        perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
        return as_dict(*batch_loop(lambda idx: self.batch(x, yn, idx, epoch), perm, batch_size))

    def _maybe_poison(self, epoch):
        if epoch == self.epoch:
            self.epoch = None
            with torch.no_grad():
                self.model.mlp.output_layer.weight.fill_(float("nan"))

    def __getattr__(self, name):  # the rest of the Engine protocol: the wrapped engine's
        return getattr(self.engine, name)


def _poison(monkeypatch, at_epoch):
    real = trainer_mod.make_engine
    monkeypatch.setattr(trainer_mod, "make_engine",
                        lambda model, *a, **k: _Poisoned(real(model, *a, **k), model, at_epoch))


def test_mid_run_divergence_names_the_last_good_checkpoint(tmp_path, demo_file, monkeypatch):
    _poison(monkeypatch, 7)
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as err:
        train(_cfg(demo_file, "trainer.max_epochs=12", "trainer.save_period=5"), run)
    assert str(err.value) == (
        "epoch 7: expected finite losses, but got loss/reconstruction=nan, loss/l1=nan, loss/l2=nan, "
        "loss/grad_penalty=nan, loss/train=nan, loss/val=nan; "
        f"last good checkpoint: {run / 'checkpoints' / checkpoint_name(5)}; "
        "lower trainer.lr or set trainer.on_nonfinite=rollback")
    assert _epochs(run) == [0, 5]
    assert read_rows(find_log(run))[-1]["step"] == 6  # the log was flushed up to the last finite epoch


def test_rollback_restores_the_exact_state_of_the_last_checkpoint(tmp_path, demo_file, monkeypatch):
    """Rolled back at epoch 7 to epoch 5 == resumed from ep_5 by hand with half the lr."""
    cfg = _cfg(demo_file, "trainer.max_epochs=12", "trainer.save_period=5", "trainer.on_nonfinite=rollback")
    clean = train(cfg, tmp_path / "clean").run_dir
    _poison(monkeypatch, 7)
    with pytest.warns(RuntimeWarning, match=r"rolled back to the state after epoch 5 and halved the lr to 0.005"):
        run = train(cfg, tmp_path / "run").run_dir
    monkeypatch.undo()
    ckpt5 = load_checkpoint(clean / "checkpoints" / checkpoint_name(5))
    model = ckpt_io.training_model(ckpt5, "ep5")
    table = load_table(cfg)
    by_hand = Trainer(model, cfg.trainer, make_data(cfg, table), tmp_path / "by_hand", SimpleLogger(tmp_path / "logs"))
    by_hand.load_state(ckpt5)
    for group in by_hand.opt.param_groups:
        group["lr"] *= 0.5
    by_hand.sched._last_lr = [g["lr"] for g in by_hand.opt.param_groups]
    by_hand.fit()
    a = load_checkpoint(run / "checkpoints" / checkpoint_name(11))["model_state_dict"]
    b = load_checkpoint(tmp_path / "by_hand" / "checkpoints" / checkpoint_name(11))["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_rows(find_log(run))
    assert [r["step"] for r in rows] == list(range(12))  # the diverged epochs 6-7 were replaced
    assert [r["lr"] for r in rows][5:7] == [0.01, 0.005]


def test_rollback_keeps_optimizer_tensors_in_place(tmp_path, demo_file, monkeypatch):
    """Engines that captured Adam's state tensors (CUDA graphs) must see the restored values."""
    cfg = _cfg(demo_file, "trainer.max_epochs=4", "trainer.save_period=2", "trainer.on_nonfinite=rollback")
    seen = {}
    real_load = trainer_mod.load_optimizer_state

    def spy(opt, saved):
        before = {id(t) for st in opt.state.values() for t in st.values()}
        real_load(opt, saved)
        seen["same"] = before == {id(t) for st in opt.state.values() for t in st.values()} and bool(before)

    monkeypatch.setattr(trainer_mod, "load_optimizer_state", spy)
    _poison(monkeypatch, 3)
    with pytest.warns(RuntimeWarning):
        train(cfg, tmp_path / "run")
    assert seen["same"]


# ---- disk trouble ------------------------------------------------------------------------
def test_disk_full_at_a_checkpoint_leaves_the_previous_one_intact(tmp_path, demo_file, monkeypatch):
    run = tmp_path / "run"
    real_fsync = os.fsync

    def full_at_epoch_10(fd):
        if checkpoint_name(10) in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(rollfit.io.os, "fsync", full_at_epoch_10)
    with pytest.raises(OutputError) as err:
        train(_cfg(demo_file, "trainer.max_epochs=20", "trainer.save_period=5"), run)
    ckpts = run / "checkpoints"
    assert str(err.value) == (f"{ckpts / checkpoint_name(10)}: could not write, the disk is full; free space and run "
                              f"again (the previous file is intact); last complete checkpoint: "
                              f"{ckpts / checkpoint_name(5)}")
    assert _epochs(run) == [0, 5] and _temp_files(run) == []
    monkeypatch.undo()
    assert resume(run).resumed_from.name == checkpoint_name(5)


def test_unwritable_output_fails_before_training(tmp_path, demo_file, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "run"
    assert main(["train", "--hdf5", str(demo_file), "--output", str(out), *BASE, "trainer.max_epochs=5"]) == 2
    assert capsys.readouterr().err == f"rollfit train: error: {out}: could not write (Not a directory)\n"


def test_read_only_output_folder_fails_before_training(tmp_path, demo_file, monkeypatch):
    """Tests run as root, where chmod does not stop writes: the probe's OS error is injected."""
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def denied(*args, **kwargs):
        if ".rollfit-probe." in str(kwargs.get("prefix", "")):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(rollfit.io.tempfile, "mkstemp", denied)
    out = tmp_path / "ro"
    with pytest.raises(OutputError) as err:
        train(_cfg(demo_file, "trainer.max_epochs=5"), out)
    assert str(err.value) == f"{out}: could not write, the folder is not writable (Permission denied)"
    assert not (out / "config.yaml").exists() and _epochs(out) == []


# ---- signals, in-process ---------------------------------------------------------------------
def _signal_at(epoch, *signums):
    def on_log(e, row):
        if e == epoch:
            for s in signums:
                os.kill(os.getpid(), s)
    return on_log


def test_sigterm_stops_after_the_epoch_with_a_checkpoint(tmp_path, demo_file):
    run = tmp_path / "run"
    # the handlers come back as they were (SIGINT is ignored, not Python's handler, in a job
    # started in the background without job control)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as err:
        train(_cfg(demo_file, "trainer.max_epochs=30", "trainer.save_period=10"), run,
              on_log=_signal_at(3, signal.SIGTERM))
    assert err.value.exit_code == 143 and err.value.epoch == 4
    assert str(err.value) == (f"interrupted by SIGTERM after epoch 4; checkpoint written: "
                              f"{run / 'checkpoints' / checkpoint_name(4)}; resume with: rollfit train --resume "
                              f"{run.resolve()}")
    assert _epochs(run) == [0, 4] and read_rows(find_log(run))[-1]["step"] == 4
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_second_ctrl_c_aborts_at_once_without_partial_files(tmp_path, demo_file, monkeypatch):
    """The second SIGINT lands while the interruption checkpoint is being written."""
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)
    real_fsync = os.fsync

    def second_sigint_mid_write(fd):
        if checkpoint_name(3) in os.readlink(f"/proc/self/fd/{fd}"):
            os.kill(os.getpid(), signal.SIGINT)
        return real_fsync(fd)

    monkeypatch.setattr(rollfit.io.os, "fsync", second_sigint_mid_write)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(demo_file, "trainer.max_epochs=30", "trainer.save_period=10"), run,
              on_log=_signal_at(2, signal.SIGINT))
    assert _epochs(run) == [0] and _temp_files(run) == []
    load_checkpoint(run / "checkpoints" / checkpoint_name(0))
    assert signal.getsignal(signal.SIGINT) == before


# ---- checkpoint cadence ------------------------------------------------------------------------
def test_time_based_checkpoints(tmp_path, demo_file, monkeypatch):
    """Epochs that take 30 s each (a fake clock) and checkpoint_every_minutes=1: every second
    epoch, besides save_period's epoch 0 and the last epoch."""
    now = {"t": 0.0}
    real_epoch = Trainer._train_epoch

    def thirty_seconds(self, epoch):
        now["t"] += 30.0
        return real_epoch(self, epoch)

    monkeypatch.setattr(trainer_mod, "_clock", lambda: now["t"])
    monkeypatch.setattr(Trainer, "_train_epoch", thirty_seconds)
    run = tmp_path / "run"
    train(_cfg(demo_file, "trainer.max_epochs=10", "trainer.save_period=1000", "trainer.checkpoint_every_minutes=1"),
          run)
    assert _epochs(run) == [0, 2, 4, 6, 8, 9]


def test_keep_last_prunes_old_periodic_checkpoints(tmp_path, demo_file):
    every = train(_cfg(demo_file, "trainer.max_epochs=12", "trainer.save_period=2"), tmp_path / "all").run_dir
    assert _epochs(every) == [0, 2, 4, 6, 8, 10, 11]
    kept = train(_cfg(demo_file, "trainer.max_epochs=12", "trainer.save_period=2", "trainer.keep_last=2"),
                 tmp_path / "kept").run_dir
    assert _epochs(kept) == [10, 11]
