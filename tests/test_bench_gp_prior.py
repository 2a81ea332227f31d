"""The prior benchmark's table: medians per surface and size, and how often ``select`` kept
the more accurate fit; and that the saved table is the one its results give."""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_gp_prior as bench  # noqa: E402


def _design(seed, ml, prior, pick):
    return {"surface": "rollout", "rows": 36, "seed": seed, "rmse_ml": ml, "rmse_prior": prior,
            "select": pick, "rmse_select": ml if pick == "ml" else prior, "seconds": 1.0}


def test_the_table_counts_a_pick_of_the_better_fit_and_ties_as_right():
    results = [_design(0, 2.0, 1.0, "prior"),   # right
               _design(1, 1.0, 3.0, "prior"),   # wrong
               _design(2, 1.0, 1.0005, "prior")]  # within 0.1%: right
    text = bench.table(results)
    assert "| rollout | 36 | 3 | 1 | 1 | 1 | 2 of 3 |" in text  # medians to 3 digits
    assert "in 2 of 3 designs" in text


def test_the_saved_table_is_the_saved_results():
    saved = json.loads((REPO / "benchmarks" / "results" / "gp_prior.json").read_text())
    table = (REPO / "benchmarks" / "results" / "gp_prior.md").read_text()
    assert table.endswith(bench.table(saved["results"]))
