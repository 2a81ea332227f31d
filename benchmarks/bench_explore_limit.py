"""How far can integrated variance go? ``explore`` campaigns with the true surface's hyperparameters.

One command: ``nice -n 10 python benchmarks/bench_explore_limit.py --workers 2`` (``--quick``
for a smoke run). It reruns the suggest benchmark's ``explore`` campaigns
(``bench_suggest.py``: the same 20 Sobol points, rounds of 8, test design and seeds) on
branin and borehole with a stronger version of the acquisition, ``oracle``: ``suggest``
chooses each batch with the refitted GP's length scales, output scale and noise replaced by
those of a GP fitted to 512 noise-free Sobol points of the true function (hyperparameters a
campaign of 20-60 rows cannot know; the RMSE is still that of the ordinary refit on the
campaign's rows).

If even this needs more than 80% of Sobol's 68 simulations to reach the RMSE that Sobol
reaches at 68, the issue-13 bar for ``explore`` is out of reach of integrated variance on
these functions, however well the hyperparameters are known. The Sobol medians come
from ``benchmarks/results/suggest.json`` (same seeds).

Writes ``benchmarks/results/explore_limit.json`` and ``explore_limit.md``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_suggest as bench  # noqa: E402
import saving_pool  # noqa: E402

PROBLEMS = ("branin", "borehole")
ORACLE_ROWS = 512
_ORACLES: dict[str, object] = {}
_PLAIN_SUGGEST = bench._suggest  # run() swaps bench._suggest for _oracle_suggest, which calls this one


def oracle_gp(task: bench.Task):
    """A GP fitted (the kind's default fit) to ``ORACLE_ROWS`` noise-free Sobol points of the truth."""
    import torch
    from scipy.stats import qmc

    from rollfit.model.gp import fit_gp, make_gp

    if task.name not in _ORACLES:
        x = task.lo + qmc.Sobol(len(task.lo), scramble=True, seed=99).random(ORACLE_ROWS) * (task.hi - task.lo)
        gp = make_gp(torch.as_tensor(x), torch.as_tensor(task.truth(x)[:, None]))
        fit_gp(gp)
        _ORACLES[task.name] = gp
    return _ORACLES[task.name]


def with_oracle_hyperparameters(sur, task: bench.Task):
    """A copy of the fitted ``Surrogate`` whose GP has the oracle's length scales, output scale
    and noise, converted to this GP's input box and output standardization."""
    import torch

    oracle = oracle_gp(task)
    sur = copy.deepcopy(sur)
    gp = sur.model.gps[0]
    kernel, theirs = gp.covar_module, oracle.covar_module
    # Normalize divides by the box's width (its coefficient): our normalized length = the
    # oracle's x its width / ours
    ratio = oracle.input_transform.coefficient.reshape(-1) / gp.input_transform.coefficient.reshape(-1)
    var_ratio = (oracle.outcome_transform.stdvs / gp.outcome_transform.stdvs).reshape(()).square()
    with torch.no_grad():
        kernel.base_kernel.lengthscale = (theirs.base_kernel.lengthscale.reshape(-1) * ratio).reshape(
            kernel.base_kernel.lengthscale.shape)
        kernel.outputscale = theirs.outputscale * var_ratio
        gp.likelihood.noise = (oracle.likelihood.noise * var_ratio).clamp_min(2 * sur.model.settings.noise_floor)
    gp.eval()
    return sur


def _oracle_suggest(sur, task: bench.Task, x, y, goal: str, seed: int):
    """``bench_suggest._suggest`` on the surrogate with the oracle's hyperparameters."""
    return _PLAIN_SUGGEST(with_oracle_hyperparameters(sur, task), task, x, y, goal, seed)


def run(job: tuple[str, int, int, int]) -> dict:
    """One campaign of ``bench_suggest.run_campaign``'s explore arm, its batches chosen by ``_oracle_suggest``."""
    name, seed, rounds, test_rows = job
    bench._suggest = _oracle_suggest
    res = bench.run_campaign((name, "explore", seed, rounds, test_rows, False))
    return {**res, "arm": "oracle"}


def table(results: list[dict], reference: list[dict], problems: list[str], seeds: int) -> str:
    """Median RMSE per round of the oracle arm, beside the suggest benchmark's Sobol and explore arms."""
    points = results[0]["points"]
    total, lines = points[-1], [f"Median of {seeds} seeds (RMSE vs the noise-free truth).", "",
                                "| problem | arm | " + " | ".join(map(str, points)) + " | reaches Sobol's final at |",
                                "|---|---|" + "---:|" * len(points) + "---|"]
    for p in problems:
        sobol = bench.medians(reference, p, "sobol", "rmse")
        for arm, rows in (("sobol", reference), ("explore", reference), ("oracle", results)):
            m = bench.medians(rows, p, arm, "rmse")[:len(points)]
            if not m:
                continue
            k = bench.first_reaching(m, sobol[-1])
            reach = "not reached" if k is None else f"{points[k]} of {total}"
            lines.append(f"| {p} | {arm} | " + " | ".join(f"{v:.4g}" for v in m) + f" | {reach} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 rounds (a smoke run)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    seeds, rounds = (1, 2) if args.quick else (args.seeds, bench.ROUNDS)
    reference = json.loads((HERE / "results" / "suggest.json").read_text())["results"]
    reference = [r for r in reference if r["seed"] < seeds]
    jobs = [(p, s, rounds, 2000) for s in range(seeds) for p in args.problems]  # the suggest benchmark's test rows
    out = Path(args.out)
    tag = "explore_limit_quick" if args.quick else "explore_limit"
    results, wall = saving_pool.run_saving(
        run, jobs, args.workers, out, tag,
        lambda res: f"{res['problem']:>9} {res['arm']:>15} seed {res['seed']}: rmse "
                    f"{['%.3g' % v for v in res['rmse']]} ({res['seconds']:.0f} s)")
    text = table(results, reference, args.problems, seeds)
    (out / f"{tag}.md").write_text(text + f"\nWall time {wall / 60:.1f} min.\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
