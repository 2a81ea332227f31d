"""best.ckpt and early stopping: the lowest validation loss is kept, loaded and survives resume.

The validation loss that chooses is the run's reconstruction loss (here huber) on the
validation rows, logged as ``loss/val_recon``; the MSE (``loss/val``) with recon_type mse.

The case is a tiny noisy campaign (13 inputs, 30 training rows, noise std 1) with a large
learning rate, so the validation loss falls, then rises as the network fits the noise: the
best epoch is well before the last one.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import demo_config

from rollfit.analysis.surrogate import Surrogate
from rollfit.data.synthetic import DEFAULT_13_NAMES, make_campaign
from rollfit.errors import CheckpointError
from rollfit.model.kinds import KindSpec, register_kind
from rollfit.model.network import build_from_config
from rollfit.pipeline.run import resume, train
from rollfit.runs.checkpoint import (checkpoint_name, find_resume_checkpoint, list_checkpoints, load_checkpoint,
                                     resolve_checkpoint)
from rollfit.runs.folder import RunFolder
from rollfit.training.logger import find_log, read_rows
from rollfit.training.trainer import BestEpoch

EPOCHS = 120
ARGS = [f"trainer.max_epochs={EPOCHS}", "trainer.lr=0.05", "trainer.lr_patience=1000", "trainer.save_period=1",
        "trainer.log_period=1", "trainer.progress=false", "trainer.report=false", "data.train_split=0.5",
        "model.layers=[32,32]", "data.cache=false", f"data.in_lbl={json.dumps(list(DEFAULT_13_NAMES))}"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def noisy_file(tmp_path_factory) -> Path:
    """60 groups (about 57 successful) of a noisy campaign varying all 13 inputs."""
    return make_campaign(tmp_path_factory.mktemp("noisy"), n_groups=60, n_files=1, seed=0)[0]


def _inputs(*rows: float) -> torch.Tensor:
    """Rows of 13 inputs, each row one value for all of them."""
    return torch.tensor([[v] * len(DEFAULT_13_NAMES) for v in rows], dtype=torch.float32)


def _train(data_file: Path, out: Path, *extra: str):
    return train(demo_config(data_file, ARGS + list(extra)), out)


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, noisy_file) -> Path:
    """A run whose validation loss rises after its best epoch; a checkpoint every epoch."""
    return _train(noisy_file, tmp_path_factory.mktemp("best") / "run").run_dir


def _val_losses(run: Path, key: str = "loss/val_recon") -> dict[int, float]:
    """Per logged epoch the loss that chooses the best epoch (the run's huber on the validation rows)."""
    return {int(r["step"]): float(r[key]) for r in read_rows(find_log(run))}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- what best.ckpt holds --------------------------------------------------------------------------------
def test_best_ckpt_is_the_state_of_the_lowest_validation_loss(overfit_run):
    val = _val_losses(overfit_run)
    best_epoch = min(val, key=val.get)
    assert best_epoch < EPOCHS - 20 and val[EPOCHS - 1] > 1.02 * val[best_epoch]  # the case overfits
    best = load_checkpoint(overfit_run / "checkpoints" / "best.ckpt")
    assert best["epoch"] == best["config"]["best_epoch"] == best_epoch
    assert best["config"]["best_val"] == pytest.approx(val[best_epoch], rel=1e-6)
    same_epoch = load_checkpoint(overfit_run / "checkpoints" / checkpoint_name(best_epoch))
    assert _same_weights(best["model_state_dict"], same_epoch["model_state_dict"])
    # the full checkpoint config (labels, bounds, run config...), so it loads like any checkpoint
    assert {k: v for k, v in best["config"].items() if k not in ("best_epoch", "best_val")} == same_epoch["config"]
    assert same_epoch["trainer_state"]["best"]["epoch"] == best_epoch
    # the weights as trained, which --init-from fine-tunes from (normalized targets, as the epoch's)
    assert best["net_convention"] == same_epoch["trainer_state"]["net_convention"] == "normalized"
    assert _same_weights(best["net_state_dict"], same_epoch["trainer_state"]["net_state_dict"])
    from rollfit.runs.checkpoint import training_model

    tuned = training_model(best, overfit_run / "checkpoints" / "best.ckpt")
    assert tuned.target_convention == "normalized" and _same_weights(tuned.state_dict(), best["net_state_dict"])


def test_surrogate_load_prefers_best_ckpt(overfit_run):
    s = Surrogate.load(overfit_run)
    best = overfit_run / "checkpoints" / "best.ckpt"
    assert s.checkpoint == best and resolve_checkpoint(overfit_run) == best
    x = _inputs(0.8, 1.1)
    epoch = Surrogate.load(overfit_run / "checkpoints" / checkpoint_name(s.config["best_epoch"]))
    newest = Surrogate.load(list_checkpoints(overfit_run)[-1])  # a file named explicitly comes first
    assert newest.checkpoint.name == checkpoint_name(EPOCHS - 1)
    assert torch.equal(torch.as_tensor(s.predict(x)), torch.as_tensor(epoch.predict(x)))
    assert not torch.equal(torch.as_tensor(s.predict(x)), torch.as_tensor(newest.predict(x)))


def test_a_damaged_best_ckpt_falls_back_to_the_newest_epoch(overfit_run, tmp_path):
    run = Path(shutil.copytree(overfit_run, tmp_path / "run"))
    best = run / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:200])
    with pytest.warns(UserWarning, match=r"best\.ckpt: expected a torch checkpoint, but it could not be read .*; "
                                         r"using the newest checkpoints/ep_\*\.ckpt instead$"):
        s = Surrogate.load(run)
    assert s.checkpoint == list_checkpoints(run)[-1]


def test_best_ckpt_is_written_at_checkpoint_times_only(noisy_file, tmp_path, monkeypatch):
    """Not once per improving epoch: at the saves (every 25 epochs, the last) when it changed."""
    import rollfit.training.trainer as trainer_module

    written: list[str] = []
    real = trainer_module.save_checkpoint

    def counting(path, state):
        written.append(Path(path).name)
        return real(path, state)

    monkeypatch.setattr(trainer_module, "save_checkpoint", counting)
    run = _train(noisy_file, tmp_path / "run", "trainer.save_period=25").run_dir
    saves = [n for n in written if n.startswith("ep_")]
    assert saves == [checkpoint_name(e) for e in (0, 25, 50, 75, 100, EPOCHS - 1)]
    val = _val_losses(run)
    best_so_far = [min((e for e in val if e <= save), key=val.get) for save in (0, 25, 50, 75, 100, EPOCHS - 1)]
    changed = [b for i, b in enumerate(best_so_far) if i == 0 or b != best_so_far[i - 1]]
    assert written.count("best.ckpt") == len(changed) < len(saves)  # the case settles before its end
    best_epoch = best_so_far[-1]
    assert load_checkpoint(run / "checkpoints" / "best.ckpt")["epoch"] == best_epoch


def test_with_recon_type_mse_the_validation_mse_chooses(noisy_file, tmp_path):
    run = _train(noisy_file, tmp_path / "run", "trainer.recon_type=mse", "trainer.max_epochs=40").run_dir
    rows = read_rows(find_log(run))
    assert "loss/val_recon" not in rows[0]
    val = _val_losses(run, "loss/val")
    best = load_checkpoint(run / "checkpoints" / "best.ckpt")["config"]
    assert best["best_epoch"] == min(val, key=val.get) and best["best_val"] == pytest.approx(min(val.values()), rel=1e-6)


def test_huber_on_the_validation_rows_chooses_not_their_mse(overfit_run):
    """Squared gross outliers in the validation rows would make the MSE choose by them."""
    import numpy as np

    from rollfit.config import validate
    from rollfit.pipeline.run import load_table, make_data

    s = Surrogate.load(overfit_run)
    cfg = validate(s.config["run_config"], source="run config")
    data = make_data(cfg, load_table(cfg))
    model = Surrogate.load(overfit_run / "checkpoints" / checkpoint_name(s.config["best_epoch"]))
    yn = (data.val.y.numpy() - np.asarray(s.config["target_mean"])) / np.asarray(s.config["target_std"])
    pred = (np.asarray(model.predict(data.val.x.numpy())) - np.asarray(s.config["target_mean"])) / \
        np.asarray(s.config["target_std"])
    r = np.abs(pred - yn)
    huber = float(np.where(r < 1.0, 0.5 * r * r, r - 0.5).mean())
    assert s.config["best_val"] == pytest.approx(huber, rel=1e-4)


def test_keep_best_false_writes_no_best_ckpt(noisy_file, tmp_path):
    result = _train(noisy_file, tmp_path / "run", "trainer.keep_best=false", "trainer.max_epochs=10")
    assert not (result.run_dir / "checkpoints" / "best.ckpt").exists()
    assert Surrogate.load(result.run_dir).checkpoint == list_checkpoints(result.run_dir)[-1]


# ---- early stopping ----------------------------------------------------------------------------------------
def test_early_stopping_stops_after_patience_epochs_without_improvement(noisy_file, tmp_path, capsys):
    patience = 15
    result = _train(noisy_file, tmp_path / "run", f"trainer.early_stop_patience={patience}",
                    "trainer.save_period=1000")
    run, val = result.run_dir, _val_losses(result.run_dir)
    stopped = max(val)
    assert stopped < EPOCHS - 1  # it stopped early
    assert result.last_checkpoint.name == checkpoint_name(stopped)  # the final checkpoint is written
    # the last improvement by more than lr_threshold (relative) was `patience` epochs before the stop
    ref, ref_epoch = math.inf, -1
    for e in sorted(val):
        if val[e] < ref * (1 - 1e-3):
            ref, ref_epoch = val[e], e
    assert stopped - ref_epoch == patience
    best_epoch = min(val, key=val.get)
    assert load_checkpoint(run / "checkpoints" / "best.ckpt")["epoch"] == best_epoch
    out = capsys.readouterr().out
    assert (f"early stop at epoch {stopped}: the validation loss did not improve by more than 0.001 (relative) "
            f"for {patience} epochs; best epoch {best_epoch} (validation loss ") in out
    # resuming an early-stopped run trains nothing and says why
    ckpts_before = sorted(p.name for p in (run / "checkpoints").iterdir())
    resume(run)
    assert "the run stopped early at epoch" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ckpts_before


# ---- resume, pruning, rollbacks --------------------------------------------------------------------------
def test_resume_keeps_the_best_epoch_found_before_it(overfit_run, tmp_path):
    """Resumed after the best epoch, with best.ckpt gone: the best still comes from trainer_state."""
    best_epoch = load_checkpoint(overfit_run / "checkpoints" / "best.ckpt")["epoch"]
    run = Path(shutil.copytree(overfit_run, tmp_path / "run"))
    cut = best_epoch + 10
    for p in list_checkpoints(run):
        if int(p.stem[3:]) > cut:
            p.unlink()
    (run / "checkpoints" / "best.ckpt").unlink()
    result = resume(run)
    assert result.resumed_from.name == checkpoint_name(cut)
    got = load_checkpoint(run / "checkpoints" / "best.ckpt")
    want = load_checkpoint(overfit_run / "checkpoints" / "best.ckpt")
    assert got["epoch"] == best_epoch and got["config"]["best_val"] == want["config"]["best_val"]
    assert _same_weights(got["model_state_dict"], want["model_state_dict"])
    last = checkpoint_name(EPOCHS - 1)  # and the resumed run is still the same run, bit for bit
    assert _same_weights(load_checkpoint(run / "checkpoints" / last)["model_state_dict"],
                         load_checkpoint(overfit_run / "checkpoints" / last)["model_state_dict"])


def test_pruning_keeps_best_ckpt(noisy_file, tmp_path):
    run = _train(noisy_file, tmp_path / "run", "trainer.keep_last=1", "trainer.save_period=10").run_dir
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", checkpoint_name(EPOCHS - 1)]
    assert load_checkpoint(run / "checkpoints" / "best.ckpt")["epoch"] < EPOCHS - 1


def test_resume_never_starts_from_best_ckpt(overfit_run):
    path, _ = find_resume_checkpoint(overfit_run)
    assert path.name == checkpoint_name(EPOCHS - 1)
    best = overfit_run / "checkpoints" / "best.ckpt"
    with pytest.raises(CheckpointError) as err:
        find_resume_checkpoint(best)
    assert str(err.value) == (f"{best}: expected a training checkpoint (checkpoints/ep_*.ckpt) to resume from, but "
                              "best.ckpt holds only the weights of the best epoch; resume the run folder (its newest "
                              "ep_*.ckpt), or fine-tune from best.ckpt with --init-from")


def test_best_epoch_state_round_trips_and_rolls_back():
    """What trainer_state carries: a rollback or resume restores the best-so-far exactly."""
    net = torch.nn.Linear(2, 1)
    best = BestEpoch(net, threshold=0.1, keep=True)
    for epoch, val in enumerate([1.0, 0.95, 0.8, 0.85]):
        best.update(epoch, val)
    assert (best.epoch, best.val, best.stop_ref, best.bad) == (2, 0.8, 0.8, 1)  # 0.95 was not a 10% gain
    kept = {k: v.clone() for k, v in best.state()["net_state_dict"].items()}
    snapshot = {k: (v if k != "net_state_dict" else {n: t.clone() for n, t in v.items()})
                for k, v in best.state().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    best.update(4, 0.5)
    assert best.epoch == 4 and not torch.equal(best.weights["weight"], kept["weight"])
    best.load(snapshot)
    assert (best.epoch, best.val, best.bad) == (2, 0.8, 1) and best.pending
    assert _same_weights(best.weights, kept)
    best.load(None)
    assert best.epoch == -1 and best.weights is None and not best.pending


# ---- a folder with best.ckpt only (the kinds fitted in one go) ----------------------------------------------
register_kind(KindSpec("fitted_once_test", build_from_config, has_std=False, resumable=False, exports=(),
                       summary="a test kind fitted in one go (writes checkpoints/best.ckpt only)"))


def _best_only_folder(overfit_run: Path, tmp_path: Path, kind: str = "mlp") -> Path:
    run = tmp_path / "gp_run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(overfit_run / "config.yaml", run / "config.yaml")
    state = load_checkpoint(overfit_run / "checkpoints" / "best.ckpt")
    state["config"]["kind"] = kind
    torch.save(state, run / "checkpoints" / "best.ckpt")
    return run


def test_a_folder_with_only_best_ckpt_loads(overfit_run, tmp_path):
    run = _best_only_folder(overfit_run, tmp_path, "fitted_once_test")
    folder = RunFolder.at(run)
    assert folder.run_markers() == ["config.yaml", "checkpoints/"] and folder.list_checkpoints() == []
    s = Surrogate.load(run)
    assert s.checkpoint == run / "checkpoints" / "best.ckpt"
    x = _inputs(0.9)
    assert torch.equal(torch.as_tensor(s.predict(x)), torch.as_tensor(Surrogate.load(overfit_run).predict(x)))
    with pytest.raises(CheckpointError) as err:
        find_resume_checkpoint(run)
    assert str(err.value).startswith(f"{run}: expected a run of a kind that trains in epochs (")
    assert str(err.value).endswith("to resume, but this run is 'fitted_once_test', which is fitted in one go "
                                   "(checkpoints/best.ckpt only); train it again instead")


def test_the_report_names_the_checkpoint_and_warns_when_validation_is_training(overfit_run, tmp_path):
    from rollfit.analysis.report import checkpoint_notes

    s = Surrogate.load(overfit_run)
    notes = " ".join(checkpoint_notes(s))
    assert f"the weights of the lowest validation loss: epoch {s.config['best_epoch']}" in notes
    assert "huber in training units" in notes
    assert f"of a run trained to epoch {EPOCHS - 1}" in notes and "train_split is 1.0" not in notes
    run = Path(shutil.copytree(overfit_run, tmp_path / "all_rows"))
    state = load_checkpoint(run / "checkpoints" / "best.ckpt")
    state["config"]["split"]["train_split"] = 1.0
    torch.save(state, run / "checkpoints" / "best.ckpt")
    notes = " ".join(checkpoint_notes(Surrogate.load(run)))
    assert "data.train_split is 1.0: the validation rows are the training rows" in notes
    last = " ".join(checkpoint_notes(Surrogate.load(list_checkpoints(run)[-1])))
    assert f"the checkpoint of epoch {EPOCHS - 1}" in last and "train_split" not in last
    json.dumps(notes)  # plain text, embeddable


def test_malformed_best_weights_are_one_line_errors(overfit_run, tmp_path):
    state = load_checkpoint(overfit_run / "checkpoints" / "best.ckpt")
    for key, value, message in (("net_state_dict", {"w": "x"}, "net_state_dict: expected a dict of weight tensors, "
                                                                "but got dict {'w': 'x'}"),
                                ("net_convention", "both", "net_convention: expected 'normalized' or 'raw', but "
                                                           "got str 'both'")):
        path = tmp_path / f"{key}.ckpt"
        torch.save({**state, key: value}, path)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert str(err.value) == f"{path}: {message}"


def test_keeping_the_best_changes_nothing_about_training(noisy_file, tmp_path):
    """best.ckpt's weight swap (units conversion) and extra validation pass leave the run bit-identical."""
    a = _train(noisy_file, tmp_path / "a", "trainer.max_epochs=30", "trainer.save_period=7").run_dir
    b = _train(noisy_file, tmp_path / "b", "trainer.max_epochs=30", "trainer.save_period=7",
               "trainer.keep_best=false").run_dir
    last = checkpoint_name(29)
    assert _same_weights(load_checkpoint(a / "checkpoints" / last)["model_state_dict"],
                         load_checkpoint(b / "checkpoints" / last)["model_state_dict"])
    assert [r["loss/train"] for r in read_rows(find_log(a))] == [r["loss/train"] for r in read_rows(find_log(b))]
