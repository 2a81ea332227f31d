"""Which length-scale prior should a GP fit use? Maximum likelihood against BoTorch's
dimension-scaled prior, and how often ``prior="select"`` (the default) picks the better one.

One command: ``nice -n 10 python benchmarks/bench_gp_prior.py`` (``--quick``: 1 seed, 2
sizes). For each surface, size and seed, the same rows are fitted twice: by maximum
likelihood (``prior="none"``, the kind's default starts) and under the dim-scaled prior
(one start, as ``select_prior`` fits its twin). Both are scored by RMSE against the
noise-free truth on 2,000 Latin-hypercube test points, and ``gp.twin_is_better`` (the
leave-one-out rule ``select`` uses) says which of the two ``select`` keeps.

Surfaces, with the designs of the suggest benchmark (scrambled Sobol points; the noisy ones
observed with noise std 1 and 3% gross outliers, fitted by ``robust_gp``):
branin (2 inputs) and borehole (8), clean, ``gp``; the 13-input rollout surface (every input
matters: the bowl plus 5 x each other input's offset) and the bowl alone (11 of 13 inputs do
not matter), ``robust_gp``. Sizes 20-100 rows: the range of a simulate-fit-suggest loop.

``--cost`` instead times one fit with and without the twin (CPU seconds, one thread) on the
accuracy benchmark's rollout_170 and wing_100.

Writes ``benchmarks/results/gp_prior.json`` and ``gp_prior.md`` (per surface and size: the
median RMSE of each fit and of the one ``select`` keeps, and how often it kept the better).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SURFACES = ("branin", "borehole", "rollout", "bowl")
SIZES, SEEDS = (20, 36, 52, 68, 100), 4


def _task(name: str):
    import bench_suggest
    from problems import rollout_truth

    if name == "bowl":
        task = bench_suggest.make_task("rollout")
        return dataclasses.replace(task, name="bowl", truth=lambda x: rollout_truth(x, tilt=0.0))
    return bench_suggest.make_task(name)


def _fit(x: np.ndarray, y: np.ndarray, robust: bool, prior: str):
    import torch

    from rollfit.model.gp import DEFAULT_SETTINGS, GPSurrogate, twin_settings

    settings = (twin_settings(DEFAULT_SETTINGS) if prior == "dim_scaled"
                else dataclasses.replace(DEFAULT_SETTINGS, prior=prior, robust_prior=prior))
    model = GPSurrogate(torch.as_tensor(x), torch.as_tensor(y[:, None]), robust=robust, settings=settings)
    model.fit()
    return model


def one_design(job: tuple[str, int, int, int]) -> dict:
    """Both fits of one (surface, size, seed) design, their RMSE and ``select``'s pick."""
    import torch
    from scipy.stats import qmc

    from rollfit.model.gp import twin_is_better

    name, n, seed, test_rows = job
    torch.set_num_threads(1)
    task = _task(name)
    span = task.hi - task.lo
    x_test = task.lo + qmc.LatinHypercube(len(task.lo), seed=77).random(test_rows) * span
    y_test = task.truth(x_test)
    x = task.lo + qmc.Sobol(len(task.lo), scramble=True, seed=seed).random(n) * span
    y = task.observe(x, np.random.default_rng(seed))
    t0 = time.perf_counter()
    ml, twin = (_fit(x, y, task.noisy, prior) for prior in ("none", "dim_scaled"))
    rmse = {k: float(np.sqrt(np.mean((m.predict(torch.as_tensor(x_test))[:, 0].numpy() - y_test) ** 2)))
            for k, m in (("ml", ml), ("prior", twin))}
    pick = "prior" if twin_is_better(ml.gps[0], twin.gps[0]) else "ml"
    return {"surface": name, "rows": n, "seed": seed, "rmse_ml": rmse["ml"], "rmse_prior": rmse["prior"],
            "select": pick, "rmse_select": rmse[pick], "seconds": time.perf_counter() - t0}


def table(results: list[dict]) -> str:
    """Medians per surface and size; a pick is 'better' when its RMSE is the lower (ties: both)."""
    lines = ["| surface | rows | designs | RMSE max. likelihood | RMSE dim-scaled prior | RMSE select | select kept "
             "the better fit |", "|---|---:|---:|---:|---:|---:|---:|"]
    total = good = 0
    for name in dict.fromkeys(r["surface"] for r in results):
        for n in sorted({r["rows"] for r in results if r["surface"] == name}):
            rs = [r for r in results if r["surface"] == name and r["rows"] == n]
            med = lambda key: float(np.median([r[key] for r in rs]))  # noqa: E731
            ok = sum(r["rmse_select"] <= min(r["rmse_ml"], r["rmse_prior"]) * (1 + 1e-3) for r in rs)
            total, good = total + len(rs), good + ok
            lines.append(f"| {name} | {n} | {len(rs)} | {med('rmse_ml'):.3g} | {med('rmse_prior'):.3g} "
                         f"| {med('rmse_select'):.3g} | {ok} of {len(rs)} |")
    return "\n".join(lines) + f"\n\n`select` kept the more accurate fit (within 0.1%) in {good} of {total} designs.\n"


def cost(problems: tuple[str, ...] = ("rollout_170", "wing_100")) -> None:
    """CPU seconds of one fit with ``prior="none"`` and with ``"select"`` (alternated, twice each),
    ``robust_gp`` and ``gp``, on accuracy-benchmark problems: what the twin costs."""
    import torch

    from problems import make_problem

    from rollfit.model.gp import DEFAULT_SETTINGS, GPSurrogate

    torch.set_num_threads(1)
    for name in problems:
        p = make_problem(name)
        x = torch.as_tensor(p.x_train, dtype=torch.float64)
        y = torch.as_tensor(p.y_train, dtype=torch.float64).reshape(len(x), -1)
        for robust in (True, False):
            for prior in ("none", "select", "none", "select"):
                settings = dataclasses.replace(DEFAULT_SETTINGS, prior=prior, robust_prior=prior)
                t0 = time.process_time()
                GPSurrogate(x, y, robust=robust, settings=settings).fit()
                print(f"{name} {'robust_gp' if robust else 'gp'} prior={prior}: {time.process_time() - t0:.1f} CPU s",
                      flush=True)


def main(argv: list[str] | None = None) -> int:
    import saving_pool

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 and 36 rows, 300 test points")
    parser.add_argument("--surfaces", nargs="+", default=list(SURFACES), choices=SURFACES)
    parser.add_argument("--workers", type=int, default=1, help="designs fitted at once (processes, one thread each)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for gp_prior.json/.md")
    parser.add_argument("--cost", action="store_true", help="CPU seconds of a fit with and without the twin, instead")
    args = parser.parse_args(argv)
    if args.cost:
        cost()
        return 0
    sizes, seeds, test_rows = ((20, 36), 1, 300) if args.quick else (SIZES, SEEDS, 2000)
    jobs = [(s, n, seed, test_rows) for s in args.surfaces for n in sizes for seed in range(seeds)]
    out = Path(args.out)
    tag = "gp_prior_quick" if args.quick else "gp_prior"
    results, wall = saving_pool.run_saving(
        one_design, jobs, args.workers, out, tag,
        lambda res: f"{res['surface']:>9} {res['rows']:>4} rows seed {res['seed']}: ml {res['rmse_ml']:.3g} prior "
                    f"{res['rmse_prior']:.3g} -> {res['select']} ({res['seconds']:.0f} s)")
    text = table(results)
    (out / f"{tag}.md").write_text(f"Wall time {wall / 60:.1f} min.\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
