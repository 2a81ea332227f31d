"""Evaluation: metrics in original units, the run's own validation rows, K-fold CV, the CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from rollfit.analysis.evaluate import (
    evaluate_run, fold_assignment, load_run_table, regression_metrics, split_rows,
)
from rollfit.analysis.surrogate import Surrogate
from rollfit.cli.main import main
from rollfit.pipeline.cv import cross_validate
from rollfit.data.reader import load_rollouts
from rollfit.errors import ConfigError, DataError


def _independent(y, p):
    """RMSE, MAE, R^2 and max error written differently from the library (variance form of R^2)."""
    e = np.asarray(p, np.float64) - np.asarray(y, np.float64)
    return {"rmse": float(np.linalg.norm(e) / np.sqrt(e.size)), "mae": float(np.abs(e).sum() / e.size),
            "r2": float(1.0 - np.mean(e ** 2) / np.var(np.asarray(y, np.float64))),
            "max_abs_error": float(np.abs(e).max()), "n": e.size}


def _check_close(got, want, rtol=1e-9):
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=rtol, abs=1e-12), k


def _run_copy(trained_run, tmp_path, train_split=None):
    """A writable copy of the trained run; optionally with the recorded train_split changed."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    if train_split is not None:
        for ckpt in (run / "checkpoints").glob("*.ckpt"):
            state = torch.load(ckpt, weights_only=True)
            state["config"]["split"]["train_split"] = train_split
            torch.save(state, ckpt)
    return run


def test_metrics_match_an_independent_numpy_computation():
    rng = np.random.default_rng(3)
    y = rng.normal(10, 3, (57, 2))
    p = y + rng.normal(0, 0.5, (57, 2))
    got = regression_metrics(y, p, ["a", "b"])
    for k, lbl in enumerate("ab"):
        _check_close(got[lbl], _independent(y[:, k], p[:, k]))
    assert got["a"]["n"] == 57 and isinstance(got["a"]["n"], int)


def test_r2_is_nan_for_constant_targets_and_shapes_are_checked():
    got = regression_metrics(np.ones((4, 1)), np.array([[1.0], [2.0], [1.0], [1.0]]), ["y"])
    assert np.isnan(got["y"]["r2"]) and got["y"]["max_abs_error"] == 1.0
    with pytest.raises(ValueError, match=r"expected y_true and y_pred of shape \(N, 1\), "
                                         r"but got \(3, 1\) and \(2, 1\)"):
        regression_metrics(np.ones((3, 1)), np.ones((2, 1)), ["y"])


def test_evaluation_uses_the_runs_own_validation_rows(trained_run, demo_file):
    ev = evaluate_run(trained_run)
    table = load_rollouts(demo_file, ["gait_cadence", "gait_stride"], ["cot_ma15"], cache=False)
    perm = np.random.default_rng(0).permutation(len(table))  # the documented split, rebuilt here
    val = np.sort(perm[int(round(0.8 * len(table))):])
    assert ev.rows == "validation" and not ev.training_metrics
    np.testing.assert_array_equal(ev.inputs, table.inputs[val])
    pred = Surrogate.load(trained_run).predict(table.inputs[val])
    _check_close(ev.metrics["cot_ma15"], _independent(table.targets[val, 0], pred[:, 0]), rtol=1e-6)
    assert ev.describe().startswith(f"{len(val)} validation rows (train_split 0.8) of ")
    assert ev.metrics["cot_ma15"]["r2"] > 0.5  # the surrogate learned something


def test_train_split_one_is_reported_as_training_metrics(trained_run, tmp_path, capsys):
    run = _run_copy(trained_run, tmp_path, train_split=1.0)
    ev = evaluate_run(run)
    assert ev.training_metrics and ev.metrics["cot_ma15"]["n"] == len(load_run_table(Surrogate.load(run)))
    assert main(["evaluate", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "these are training metrics, not an estimate of accuracy on new inputs" in out
    assert f"rollfit evaluate --run {run} --cv 5" in out
    saved = json.loads((run / "metrics_training.json").read_text())
    assert saved["cot_ma15"]["evaluated_on"] == "training"
    _check_close(saved["cot_ma15"], {k: ev.metrics["cot_ma15"][k] for k in ("rmse", "mae", "r2", "n")})


def test_evaluate_cli_writes_metrics_json(trained_run, tmp_path, capsys):
    run = _run_copy(trained_run, tmp_path)
    assert main(["evaluate", "--run", str(run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "metrics_validation.json").read_text())
    assert printed["metrics"] == saved and printed["cv"] is None
    assert set(saved["cot_ma15"]) >= {"rmse", "mae", "r2", "max_abs_error", "n"}
    assert saved["cot_ma15"]["evaluated_on"] == "validation"


def test_evaluate_on_another_file(trained_run, tmp_path):
    from rollfit.data.synthetic import make_demo_file

    other = make_demo_file(tmp_path / "other.h5", n=40, seed=5)
    ev = evaluate_run(trained_run, hdf5=str(other))
    table = load_rollouts(other, ["gait_cadence", "gait_stride"], ["cot_ma15"], cache=False)
    assert ev.rows == "file" and ev.metrics["cot_ma15"]["n"] == len(table)
    np.testing.assert_array_equal(ev.y_true, table.targets)


def test_changed_data_cannot_rebuild_the_split(trained_run, demo_file):
    s = Surrogate.load(trained_run)
    table = load_rollouts(demo_file, s.in_lbl, s.out_lbl, cache=False)
    with pytest.raises(DataError, match=rf"expected the {len(table)} rows the run trained on, but got 10 rows; "
                                        "the validation rows cannot be rebuilt; evaluate on a file with --hdf5 PATH"):
        split_rows(s, table.subset(np.arange(10)))


def test_fold_assignment_is_balanced_seeded_and_checked():
    f = fold_assignment(23, 5, seed=1)
    assert sorted(np.bincount(f).tolist()) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(f, fold_assignment(23, 5, seed=1))
    with pytest.raises(ConfigError, match=r"--cv: expected K between 2 and the number of rows \(23\), but got 1"):
        fold_assignment(23, 1)


@pytest.mark.slow
def test_cross_validation_agrees_with_an_independent_computation(trained_run):
    """5-fold CV on the demo run (short folds, two processes): every row is predicted by a
    model that did not see it, and the reported numbers are those of its predictions."""
    from rollfit.config import validate
    from rollfit.pipeline.run import train

    cv = cross_validate(trained_run, 5, overrides=["trainer.max_epochs=20"], workers=2, progress=False)
    s = Surrogate.load(trained_run)
    table = load_run_table(s)
    folds = np.empty(len(table), int)
    folds[np.random.default_rng(0).permutation(len(table))] = np.arange(len(table)) % 5
    np.testing.assert_array_equal(cv.fold, folds)
    assert np.isfinite(cv.y_pred).all()
    per_fold = [_independent(table.targets[folds == f, 0], cv.y_pred[folds == f, 0]) for f in range(5)]
    summary = cv.summary()["cot_ma15"]
    for m in ("rmse", "r2", "mae"):
        values = np.array([p[m] for p in per_fold])
        assert summary[m]["mean"] == pytest.approx(values.mean(), rel=1e-9)
        assert summary[m]["std"] == pytest.approx(values.std(ddof=1), rel=1e-9)
    _check_close(cv.pooled()["cot_ma15"], _independent(table.targets[:, 0], cv.y_pred[:, 0]))
    # fold 0 retrained here with the run's config must predict what CV reported for it
    raw = dict(s.config["run_config"], trainer={**s.config["run_config"]["trainer"], "max_epochs": 20,
                                                 "progress": False, "report": False})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = train(validate(raw), tmp, table=table.subset(folds != 0))
        again = Surrogate.load(res.last_checkpoint).predict(table.inputs[folds == 0])
    np.testing.assert_allclose(again, cv.y_pred[folds == 0], rtol=1e-3, atol=1e-3)


def test_evaluate_cli_cv_writes_metrics_cv_json(trained_run, tmp_path, capsys):
    run = _run_copy(trained_run, tmp_path)
    assert main(["evaluate", "--run", str(run), "--cv", "2", "--cv-epochs", "10", "--concurrent", "1"]) == 0
    out = capsys.readouterr().out
    assert "2-fold cross-validation on" in out and "±" in out
    saved = json.loads((run / "metrics_cv.json").read_text())
    assert saved["k"] == 2 and saved["overrides"] == ["trainer.max_epochs=10"]
    rmse = saved["per_output"]["cot_ma15"]["rmse"]
    assert rmse["mean"] == pytest.approx(np.mean(rmse["folds"])) and len(rmse["folds"]) == 2


def test_evaluate_cli_errors_are_one_line(trained_run, tmp_path, capsys):
    assert main(["evaluate", "--run", str(trained_run), "--cv", "1"]) == 2
    assert capsys.readouterr().err == "rollfit evaluate: error: --cv: expected K >= 2 folds, but got 1\n"
    run = _run_copy(trained_run, tmp_path)
    assert main(["evaluate", "--run", str(run), "--cv", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rollfit evaluate: error: --cv: expected K between 2 and the number of rows (")
    assert err.count("\n") == 1
    assert main(["evaluate", "--run", str(tmp_path / "nope")]) == 2
    assert "expected a run folder or a checkpoint file, but it does not exist" in capsys.readouterr().err


def test_a_relative_data_path_is_read_from_here_first_then_from_the_run_folder(tmp_path, monkeypatch):
    """One rule for evaluate, optimize and suggest: as training read it (the current folder),
    else beside the run's config, else as given (then the missing-data error names it)."""
    from rollfit.analysis.rundata import resolve_data_path

    here, run = tmp_path / "here", tmp_path / "run"
    (here / "data").mkdir(parents=True)
    (run / "data").mkdir(parents=True)
    (here / "data" / "a.h5").write_bytes(b"")
    (run / "data" / "a.h5").write_bytes(b"")
    (run / "data" / "b.h5").write_bytes(b"")
    monkeypatch.chdir(here)
    assert resolve_data_path("data/a.h5", run) == "data/a.h5"
    assert resolve_data_path(["data/a.h5", "data/b.h5"], run) == ["data/a.h5", str(run / "data" / "b.h5")]
    assert resolve_data_path("data/c.h5", run) == "data/c.h5"
    assert resolve_data_path("data/b.h5", None) == "data/b.h5"
