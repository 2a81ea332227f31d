"""The accuracy benchmark: its problems' truth, its tables, a smoke run, and the README's copy of its results."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_accuracy as bench  # noqa: E402
import problems  # noqa: E402


def test_known_values_of_the_test_functions():
    # borehole at the centre of its box, by hand: ln(250500) = 12.431; 2 pi 89335 * 290 = 1.6278e8;
    # 12.431 * (1 + 2 * 1400 * 89335 / (12.431 * 0.01 * 10950) + 89335 / 89.55) = 2.2968e6 -> 70.87.
    # branin's three minima are 0.397887
    centre = np.array([[np.mean(b) for b in problems.BOREHOLE_BOUNDS.values()]])
    assert problems.borehole(centre)[0] == pytest.approx(70.87, abs=0.01)
    minima = np.array([[-np.pi, 12.275], [np.pi, 2.275], [9.42478, 2.475]])
    assert problems.branin(minima) == pytest.approx([0.397887] * 3, abs=1e-5)
    assert problems.wing_weight(np.array([[np.mean(b) for b in problems.WING_BOUNDS.values()]]))[0] == pytest.approx(
        268.1, abs=1.0)


def test_problems_are_seeded_and_written_as_rollout_files(tmp_path):
    from rollfit.data.reader import load_rollouts

    p = problems.make_problem("rollout_170", quick=True)
    again = problems.make_problem("rollout_170", quick=True)
    assert np.array_equal(p.x_train, again.x_train) and np.array_equal(p.y_train, again.y_train)
    outliers = np.abs(p.y_train - problems.rollout_truth(p.x_train)) > 10
    assert outliers.sum() == 1  # 3% of 40 rows, at least one
    table = load_rollouts(p.write(tmp_path), p.in_lbl, [problems.OUTPUT], cache=False)
    assert np.allclose(table.inputs, p.x_train) and np.allclose(table.targets[:, 0], p.y_train, rtol=1e-6)


def test_scores_rmse_coverage_and_nll_on_a_known_case():
    p = problems.Problem("t", ["a"], np.zeros((1, 1)), np.zeros(1), np.zeros((4, 1)),
                         np.zeros(4), np.array([0.0, 1.0, 3.0, -1.0]), "test")
    s = bench.scores(p, np.ones(4), np.ones(4))
    assert s["rmse"] == pytest.approx(1.0)
    assert s["coverage95"] == pytest.approx(0.5)  # residuals -1, 0, 2, -2: |2| > 1.96 twice
    assert s["nll"] == pytest.approx(0.5 * np.log(2 * np.pi) + 0.5 * np.mean([1, 0, 4, 4]))


def test_a_kind_not_in_the_checkout_is_reported_missing_not_a_crash(monkeypatch, tmp_path):
    from rollfit.pipeline import fitting

    monkeypatch.setitem(fitting.FITTERS, "gp", "rollfit.no_such_module:gp_fitter")
    p = problems.make_problem("branin_100", quick=True)
    cell = bench.run_cell("gp", p, p.write(tmp_path), tmp_path, True, [])
    assert cell["status"] == "missing" and "rollfit.no_such_module is not importable" in cell["note"]


def test_the_table_shows_auto_against_the_best_peer():
    ok = lambda rmse, **kw: {"status": "ok", "rmse": rmse, "seconds": 1.0, **kw}  # noqa: E731
    results = {"cells": {"branin_100": {"auto": ok(0.5, chosen="gp", coverage95=0.5, nll=9.0),
                                        "robust_gp": ok(0.6, coverage95=0.95, nll=0.1),
                                        "sklearn_gp": ok(0.25), "sklearn_hgb": ok(26.0),
                                        "gp": {"status": "missing", "note": "x"}}}}
    md = bench.markdown(results)
    row = next(line for line in md.splitlines() if line.startswith("| branin_100 |"))
    assert row.split(" | ")[1:] == ["not run", "not run", "missing", "0.6", "0.5 (gp)", "0.25", "not run",
                                    "26", "2 |"]
    assert "| branin_100 | 95% / 0.1 |" in md  # auto's intervals are its chosen kind's: not a column of their own
    assert "| problem | rollfit robust_gp |" in md


@pytest.mark.slow
def test_quick_smoke_run_writes_both_result_files(tmp_path):
    assert bench.main(["--quick", "--problems", "branin_100,rollout_170", "--kinds", "mlp,sklearn_gp,sklearn_hgb",
                       "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "accuracy.json").read_text())
    cells = results["cells"]
    assert set(cells) == {"branin_100", "rollout_170"}
    for cell in cells.values():
        assert {m: c["status"] for m, c in cell.items()} == {"mlp": "ok", "sklearn_gp": "ok", "sklearn_hgb": "ok"}
        assert 0.0 <= cell["sklearn_gp"]["coverage95"] <= 1.0 and np.isfinite(cell["mlp"]["rmse"])
    assert (tmp_path / "accuracy.md").read_text() == bench.markdown(results)


def test_the_readme_quotes_the_generated_results_table():
    """README's benchmark table is the committed results file, pasted verbatim (not typed in)."""
    table = (REPO / "benchmarks" / "results" / "accuracy.md").read_text()
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- accuracy:start -->\n(.*?)<!-- accuracy:end -->", readme, re.S)
    assert m is not None, "README.md has no <!-- accuracy:start --> ... <!-- accuracy:end --> block"
    assert m.group(1) == table
    assert bench.markdown(json.loads((REPO / "benchmarks" / "results" / "accuracy.json").read_text())) == table


def test_results_name_no_machine_paths():
    assert bench.public_command("python benchmarks/bench_accuracy.py --kinds gp --output /x/y --merge /z") == \
        "python benchmarks/bench_accuracy.py --kinds gp"
    text = (REPO / "benchmarks" / "results" / "accuracy.json").read_text()
    assert "/tmp/" not in text and "/work/" not in text and "/home/" not in text
