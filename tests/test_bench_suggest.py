"""The suggest benchmark's done-when arithmetic, and the README's copy of its results."""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_suggest as bench  # noqa: E402


def _campaign(problem, arm, seed, rmse=None, regret=None):
    return {"problem": problem, "arm": arm, "seed": seed, "f_min": 0.0, "points": [20, 28, 36],
            "rmse": rmse or [], "regret": regret or []}


def test_the_checks_read_the_median_curves():
    """Two rounds of 8 after 20 points (36 in all), medians over three seeds: minimize reaches
    Sobol's final regret at 28 points, more than half of 36 (not ok); explore reaches Sobol's
    final RMSE at 28, within 80% of 36 (ok)."""
    results = []
    for seed, k in ((0, 1.0), (1, 2.0), (2, 3.0)):
        results += [_campaign("p", "minimize", seed, regret=[9.0, 0.5 * k, 0.1]),
                    _campaign("p", "sobol", seed, rmse=[5.0, 3.0, 2.0 * k], regret=[9.0, 4.0, 1.0 * k]),
                    _campaign("p", "explore", seed, rmse=[5.0, 1.0 * k, 0.5]),
                    _campaign("p", "random", seed, rmse=[5.0, 4.0, 3.0], regret=[9.0, 9.0, 9.0])]
    (c,) = bench.checks(results, ["p"], 2)
    assert c["sobol_final_regret"] == 2.0 and c["minimize_points_to_reach"] == 28 and not c["minimize_ok"]
    assert c["sobol_final_rmse"] == 4.0 and c["explore_points_to_reach"] == 28 and c["explore_ok_80"]
    assert c["explore_final_rmse"] == 0.5 and c["explore_not_worse"]
    table = bench.summary_table(results, ["p"], 2)
    assert table.splitlines()[-1] == "| p | 28 of 36 | 0.1 / 2 | 0.5 / 4 | 28 of 36 |"


def test_the_readme_quotes_the_generated_summary():
    """README's suggest table is made from the committed results file, not typed in."""
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- suggest:start -->\n(.*?)<!-- suggest:end -->", readme, re.S)
    assert m is not None, "README.md has no <!-- suggest:start --> ... <!-- suggest:end --> block"
    assert m.group(1) == bench.saved_summary(REPO / "benchmarks" / "results" / "suggest.json")
