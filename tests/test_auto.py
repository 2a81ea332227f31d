"""``model.kind: auto``: candidates cross-validated by param group, the best refitted on all rows.

Small synthetic data with a known truth: a smooth clean surface (a GP is the right model)
and the same surface with gross outliers (the robust GP is). The cheap tests run network
candidates for a few epochs; the GP choices are slow-marked.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from rollfit.config import load_config
from rollfit.data.synthetic import write_rollout_file
from rollfit.errors import ConfigError
from rollfit.model.kinds import kind_of, kind_spec
from rollfit.pipeline import auto
from rollfit.pipeline.run import train
from rollfit.runs.folder import RunFolder

NAMES = ("a", "b")


def surface(x: np.ndarray) -> np.ndarray:
    """A smooth, clean 2-D truth."""
    return np.sin(3.0 * x[:, 0]) + 0.5 * np.cos(2.0 * x[:, 1]) + x[:, 0] * x[:, 1]


def rollout_file(path, n: int = 40, outliers: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, 2)).astype(np.float32)
    y = surface(x.astype(np.float64))
    y[:outliers] += 8.0  # gross outliers: failed-but-marked-successful runs
    return write_rollout_file(path, x, {"y": y}, param_names=NAMES)


def config(path, candidates: str, *extra: str):
    cfg = load_config(None, ["model.kind=auto", f"model.auto_candidates=[{candidates}]", "model.auto_folds=3",
                             "model.layers=[16]", "model.members=2", "trainer.max_epochs=40", "trainer.lr=0.01",
                             "trainer.log_period=10", "trainer.save_period=40", "trainer.progress=false",
                             "trainer.report=false", "data.cache=false", "data.in_lbl=[a, b]", "data.out_lbl=[y]",
                             *extra])
    cfg.data.hdf5_path = str(path)
    return cfg


def require(*kinds: str) -> None:
    for kind in kinds:
        try:
            kind_spec(kind)
        except Exception:
            pytest.skip(f"kind {kind} is not registered in this checkout")


# ----------------------------------------------------------------------------- pieces
def test_gp_candidates_skipped_above_the_row_limit_with_a_note():
    cfg = load_config(None, ["model.auto_candidates=[gp, robust_gp, ensemble]", "model.gp_max_rows=30"])
    keep, skipped = auto.candidates(cfg, 31)
    assert keep == ["ensemble"]
    assert skipped["gp"] == ("gp skipped: 31 training rows is above model.gp_max_rows (30), where an exact GP's "
                             "memory and time grow too large")
    assert auto.candidates(cfg, 30) == (["gp", "robust_gp", "ensemble"], {})


def test_only_gp_candidates_above_the_limit_is_a_one_line_error():
    cfg = load_config(None, ["model.auto_candidates=[gp]", "model.gp_max_rows=10"])
    with pytest.raises(ConfigError) as err:
        auto.candidates(cfg, 11)
    assert str(err.value) == (
        "model.auto_candidates: expected at least one candidate that can fit 11 rows, but every one was skipped "
        "(gp skipped: 11 training rows is above model.gp_max_rows (10), where an exact GP's memory and time grow "
        "too large); add ensemble or mlp")


def test_normalized_rmse_averages_outputs_in_units_of_their_std():
    y = np.array([[0.0, 0.0], [0.0, 0.0]])
    pred = np.array([[1.0, 10.0], [-1.0, -10.0]])
    assert auto.normalized_rmse(y, pred, np.array([1.0, 20.0])) == pytest.approx((1.0 + 0.5) / 2)


def test_final_epochs_is_the_median_best_epoch_plus_one_within_max_epochs():
    cfg = load_config(None, ["trainer.max_epochs=100"])
    r = auto.CandidateResult("ensemble", [0.1], 0.1, [10, 30, 500], 1.0)
    assert auto.final_epochs(r, cfg) == 31
    assert auto.final_epochs(auto.CandidateResult("gp", [0.1], 0.1, None, 1.0), cfg) is None
    assert auto.final_epochs(auto.CandidateResult("mlp", [0.1], 0.1, [400, 500, 600], 1.0), cfg) == 100


def test_fold_config_stops_network_candidates_early_and_keeps_their_best():
    cfg = load_config(None, ["trainer.max_epochs=300", "trainer.save_period=7"])
    fold = auto.fold_config(cfg, "ensemble")
    assert (fold.model.kind, fold.trainer.early_stop_patience, fold.trainer.keep_best) == ("ensemble", auto.AUTO_PATIENCE, True)
    assert fold.trainer.save_period == 300 and not fold.trainer.report
    assert auto.fold_config(load_config(None, ["trainer.early_stop_patience=5"]), "mlp").trainer.early_stop_patience == 5
    assert cfg.model.kind == "mlp"  # the run's own config is untouched


# ----------------------------------------------------------------------------- end to end
def test_auto_run_records_its_choice_table_and_refits_the_chosen_kind(tmp_path, capsys):
    from rollfit.analysis.surrogate import Surrogate

    data = rollout_file(tmp_path / "d.h5", n=36)
    cfg = config(data, "gp, mlp, ensemble", "model.gp_max_rows=20")
    run = train(cfg, tmp_path / "run").run_dir
    assert "note: model.kind auto: gp skipped: 36 training rows is above model.gp_max_rows (20)" in capsys.readouterr().err
    s = Surrogate.load(run)
    choice = s.config["auto"]
    assert kind_of(s.config) == choice["chosen"] in ("mlp", "ensemble")
    assert set(choice["table"]) == {"mlp", "ensemble"} and "gp" in choice["skipped"]
    table = choice["table"]
    for row in table.values():
        assert len(row["folds"]) == 3 and all(np.isfinite(row["folds"])) and len(row["epochs"]) == 3
        assert all(0 <= e < 40 for e in row["epochs"])
    assert choice["chosen"] == min(table, key=lambda k: table[k]["cv"])
    assert choice["max_epochs"] == int(np.median(table[choice["chosen"]]["epochs"])) + 1
    # the file round trip: the table in the run folder is the one in the checkpoint
    written = json.loads(RunFolder(run).metrics(auto.CV_FILE).read_text())
    assert written == json.loads(json.dumps(choice))
    assert not (run / auto.CV_FOLDER).exists()  # the fold fits are gone
    # the refit trained the chosen epoch budget on all rows
    assert s.config["run_config"]["model"]["kind"] == "auto"


def test_auto_choice_is_reproducible_and_shown_in_the_report(tmp_path):
    from rollfit.analysis.report import write_run_report

    data = rollout_file(tmp_path / "d.h5", n=30)
    first = train(config(data, "mlp, ensemble"), tmp_path / "one").run_dir
    second = train(config(data, "mlp, ensemble"), tmp_path / "two").run_dir
    a = json.loads(RunFolder(first).metrics(auto.CV_FILE).read_text())
    b = json.loads(RunFolder(second).metrics(auto.CV_FILE).read_text())
    assert a["chosen"] == b["chosen"]
    folds = [[f for r in c["table"].values() for f in r["folds"]] for c in (a, b)]
    assert folds[0] == pytest.approx(folds[1])
    page = write_run_report(first).read_text()
    assert f"Model choice (model.kind auto): {a['chosen']}" in page and "fold 3" in page


@pytest.mark.slow
def test_auto_picks_gp_on_a_smooth_clean_surface(tmp_path):
    require("gp")
    data = rollout_file(tmp_path / "d.h5", n=40)
    run = train(config(data, "gp, mlp"), tmp_path / "run").run_dir
    choice = json.loads(RunFolder(run).metrics(auto.CV_FILE).read_text())
    assert choice["chosen"] == "gp", choice["table"]
    assert choice["table"]["gp"]["cv"] < 0.5 * choice["table"]["mlp"]["cv"]


@pytest.mark.slow
def test_auto_picks_robust_gp_when_gross_outliers_are_planted(tmp_path):
    require("gp", "robust_gp")
    data = rollout_file(tmp_path / "d.h5", n=40, outliers=3)
    run = train(config(data, "gp, robust_gp"), tmp_path / "run").run_dir
    choice = json.loads(RunFolder(run).metrics(auto.CV_FILE).read_text())
    assert choice["chosen"] == "robust_gp", choice["table"]


def test_an_interrupted_auto_run_resumes_its_chosen_kind_with_the_chosen_budget(tmp_path):
    from rollfit.analysis.surrogate import Surrogate
    from rollfit.pipeline.run import resume

    data = rollout_file(tmp_path / "d.h5", n=30)
    cfg = config(data, "mlp", "trainer.max_epochs=60", "trainer.save_period=10")
    run = train(cfg, tmp_path / "run").run_dir
    done = Surrogate.load(run).config["auto"]
    budget = done["max_epochs"]
    ckpts = sorted((run / "checkpoints").glob("ep_*.ckpt"))
    for late in ckpts[2:]:  # as if killed after its second checkpoint
        late.unlink()
    result = resume(run)
    assert result.resumed_from == ckpts[1]
    assert result.last_checkpoint.name == f"ep_{budget - 1:06d}.ckpt"
    again = Surrogate.load(result.last_checkpoint).config
    assert again["auto"] == done and kind_of(again) == "mlp"


def test_a_score_within_one_percent_is_a_tie_won_by_the_earlier_candidate():
    from rollfit.pipeline.auto import CandidateResult, pick

    def r(kind, cv):
        return CandidateResult(kind, [cv], cv, None, 1.0)

    # borehole_500's measured scores: robust_gp lower by 0.05%, gp first in the candidates
    assert pick([r("gp", 0.0018531), r("robust_gp", 0.0018522), r("ensemble", 0.0151)]).kind == "gp"
    assert pick([r("gp", 0.0200), r("robust_gp", 0.0100), r("ensemble", 0.0101)]).kind == "robust_gp"
    assert pick([r("gp", 0.00999), r("robust_gp", 0.0200), r("ensemble", 0.0099)]).kind == "gp"
    assert pick([r("gp", 0.0102), r("robust_gp", 0.0200), r("ensemble", 0.0100)]).kind == "ensemble"
