"""The explore-limit benchmark: its hyperparameter transplant and its table."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_explore_limit as limit  # noqa: E402
import bench_suggest as bench  # noqa: E402


def _physical(gp):
    """Length scales in input units and the output scale and noise in output units."""
    width = gp.input_transform.coefficient.reshape(-1)  # Normalize divides by the box's width
    var = gp.outcome_transform.stdvs.reshape(()).square()
    return (gp.covar_module.base_kernel.lengthscale.reshape(-1) * width,
            gp.covar_module.outputscale * var, gp.likelihood.noise.reshape(()) * var)


def test_the_transplant_carries_the_oracles_hyperparameters_in_physical_units(monkeypatch):
    """A branin GP of 12 rows gets those of a GP fitted to 40 other rows (another box and
    another output scale): length scales in input units, output scale and noise in output
    units equal the oracle's, the original surrogate is untouched."""
    from rollfit.model.gp import fit_gp, make_gp

    task = bench.make_task("branin")
    rng = np.random.default_rng(0)
    x = task.lo + rng.random((12, 2)) * (task.hi - task.lo) * 0.5
    sur = bench._fit(task, x, task.truth(x))
    xo = task.lo + rng.random((40, 2)) * (task.hi - task.lo)
    oracle = make_gp(torch.as_tensor(xo), torch.as_tensor(task.truth(xo)[:, None]))
    fit_gp(oracle)
    monkeypatch.setitem(limit._ORACLES, "branin", oracle)
    before = [t.clone() for t in _physical(sur.model.gps[0])]
    moved = limit.with_oracle_hyperparameters(sur, task)
    for got, want in zip(_physical(moved.model.gps[0]), _physical(oracle)):
        assert torch.allclose(got, want.clamp_min(2e-9 * float(sur.model.gps[0].outcome_transform.stdvs) ** 2),
                              rtol=1e-6)
    for got, want in zip(_physical(sur.model.gps[0]), before):
        assert torch.equal(got, want)
    assert not torch.allclose(before[0], _physical(oracle)[0])


def test_the_table_compares_with_the_saved_sobol_medians():
    """Oracle curves (3 seeds) against reference Sobol/explore curves: the first round whose
    median is at or below Sobol's final median is named."""
    ref, res = [], []
    for seed, k in ((0, 1.0), (1, 2.0), (2, 3.0)):
        ref += [{"problem": "branin", "arm": "sobol", "seed": seed, "rmse": [5.0, 3.0, 1.0 * k]},
                {"problem": "branin", "arm": "explore", "seed": seed, "rmse": [5.0, 2.5, 1.5]}]
        res.append({"problem": "branin", "arm": "oracle", "seed": seed, "points": [20, 28, 36],
                    "rmse": [5.0, 1.0 + k, 0.5]})
    text = limit.table(res, ref, ["branin"], 3)
    assert "| branin | sobol | 5 | 3 | 2 | 36 of 36 |" in text
    assert "| branin | explore | 5 | 2.5 | 1.5 | 36 of 36 |" in text
    assert "| branin | oracle | 5 | 3 | 0.5 | 36 of 36 |" in text
    res[0]["rmse"][1] = res[1]["rmse"][1] = 2.0
    assert "| branin | oracle | 5 | 2 | 0.5 | 28 of 36 |" in limit.table(res, ref, ["branin"], 3)


def test_results_md_quotes_the_generated_table():
    """The oracle rows RESULTS.md quotes are those of the saved run."""
    saved = (REPO / "benchmarks" / "results" / "explore_limit.md").read_text()
    quoted = [line for line in (REPO / "benchmarks" / "RESULTS.md").read_text().splitlines()
              if line.startswith(("| branin | oracle |", "| borehole | oracle |"))]
    assert len(quoted) == 2 and all(line in saved for line in quoted)
