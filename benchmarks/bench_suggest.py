"""Does ``rollfit suggest`` pay? Rounds of suggested simulations against Sobol and random ones.

One command: ``nice -n 10 python benchmarks/bench_suggest.py`` (``--quick``: 2 seeds, 3
rounds, small test sets, for a smoke run). For each problem and seed, 20 space-filling
points (the first 20 of a scrambled Sobol sequence) start four campaigns of 6 rounds of 8
new points each, the model refitted after every round:

- ``explore``: ``suggest(goal="explore")`` (integrated posterior variance);
- ``minimize``: ``suggest(goal="minimize:y")`` (noisy expected improvement);
- ``sobol``: the same Sobol sequence continued (an unbroken 68-point Sobol design);
- ``random``: uniform random points.

Problems (``benchmarks/problems.py``, the accuracy benchmark's functions): branin (2 inputs),
borehole (8) and the noisy 13-input rollout surface of ``rollfit.data.synthetic`` standing
in for the simulator (noise std 1, each new rollout a gross outlier of +15..25 with
probability 3%). Scores per round: RMSE of the refitted model's mean against the noise-free
truth on a Latin-hypercube test design (explore, sobol, random), and simple regret, the
noise-free value of the best point evaluated so far minus the true minimum (minimize,
sobol, random). The model is the ``gp`` kind (``robust_gp`` on the noisy surface) with the
kind's default fit, and ``suggest`` runs with its defaults. ``--cheap`` fits the GP from one
start and runs ``suggest`` with 2 optimizer starts (of 64 random batches) and 128
integration points instead of 8, 128 and 256 (``CHEAP``), for a machine shared with other
work.
Campaigns run seed by seed (every problem and arm of seed 0 first), and every finished one
is saved at once (``suggest.json``), so an interrupted run still has whole seeds;
``--summarize`` redraws the table and plot from that file. Rows go to ``suggest`` in memory (a ``Campaign``)
instead of files: the file round trip is what ``tests/test_suggest.py`` checks.

Writes ``benchmarks/results/suggest.json`` (every number), ``suggest.md`` (the median table
and the done-when checks of issue 13) and ``suggest.png`` (median curves).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import readme_block  # noqa: E402
import saving_pool  # noqa: E402

ARMS = ("explore", "minimize", "sobol", "random")
PROBLEMS = ("branin", "borehole", "rollout")  # the tables' order, whatever order the runs saved them in
INIT, ROUNDS, BATCH, SEEDS = 20, 6, 8, 5
OUTLIER_P = 0.03
# --cheap: cheaper settings than the defaults, for a shared machine (see the docstring)
CHEAP = {"RESTARTS": 2, "RAW_SAMPLES": 64, "MC_POINTS": 128}  # suggest's defaults: 8, 128, 256
CHEAP_GP_RESTARTS = 1                                         # the gp kind's default: 5
BENCH: dict[str, int] = {}           # suggest's module settings this run overrides (--cheap: CHEAP)
GP_RESTARTS: int | None = None       # GP fit starts (None: the kind's default)


@dataclass
class Task:
    """A problem: inputs, box, truth, how an observation is drawn, the true minimum."""

    name: str
    names: list[str]
    lo: np.ndarray
    hi: np.ndarray
    truth: Callable[[np.ndarray], np.ndarray]
    noisy: bool
    f_min: float

    def observe(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What a simulation returns: the truth, plus noise and the odd gross outlier on the noisy surface."""
        y = self.truth(x)
        if self.noisy:
            y = y + rng.normal(0.0, 1.0, len(y)) + (rng.random(len(y)) < OUTLIER_P) * rng.uniform(15.0, 25.0, len(y))
        return y


def _local_minimum(f: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray) -> float:
    """L-BFGS-B from the 16 best of 4096 Sobol points of the box."""
    from scipy.optimize import minimize
    from scipy.stats import qmc

    u = qmc.Sobol(len(lo), seed=0).random(4096)
    x = lo + u * (hi - lo)
    best = x[np.argsort(f(x))[:16]]
    vals = [minimize(lambda z: float(f(z[None])[0]), b, bounds=list(zip(lo, hi)), method="L-BFGS-B").fun for b in best]
    return float(min(vals))


def _box_minimum(f: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray) -> float:
    """The minimum of ``f`` over the box: the best of L-BFGS-B (``_local_minimum``) and the
    box's corners (borehole is monotone in every input: its minimum is a corner, which
    L-BFGS-B misses by 5e-5 along its flattest inputs)."""
    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(len(lo), -1).T
    return min(_local_minimum(f, lo, hi), float(f(corners).min()))


def make_task(name: str) -> Task:
    from problems import BOREHOLE_BOUNDS, BRANIN_BOUNDS, borehole, branin, rollout_truth

    from rollfit.data.synthetic import DEFAULT_13_NAMES

    if name == "branin":
        lo, hi = np.array(list(BRANIN_BOUNDS.values())).T
        return Task(name, list(BRANIN_BOUNDS), lo, hi, branin, False, 0.39788735772973816)
    if name == "borehole":
        lo, hi = np.array(list(BOREHOLE_BOUNDS.values())).T
        return Task(name, list(BOREHOLE_BOUNDS), lo, hi, borehole, False, _box_minimum(borehole, lo, hi))
    if name == "rollout":
        lo, hi = np.full(13, 0.7), np.full(13, 1.3)
        # true_cot's bowl has its minimum 55 at (1.05, 0.95); each other input adds 5 x (x - 1), least at 0.7
        return Task(name, list(DEFAULT_13_NAMES), lo, hi, rollout_truth, True, 55.0 + 5.0 * 11 * (0.7 - 1.0))
    raise ValueError(f"problem: expected branin, borehole or rollout, but got {name!r}")


# ----------------------------------------------------------------------------- one campaign
def _fit(task: Task, x: np.ndarray, y: np.ndarray):
    """The model kind the benchmark uses, fitted on (x, y), as a ``Surrogate`` over the task's box."""
    import torch

    from rollfit.analysis.surrogate import Surrogate
    from rollfit.model.gp import DEFAULT_SETTINGS, GPSurrogate

    settings = DEFAULT_SETTINGS if GP_RESTARTS is None else type(DEFAULT_SETTINGS)(
        **{**DEFAULT_SETTINGS.__dict__, "restarts": GP_RESTARTS})
    model = GPSurrogate(torch.as_tensor(x), torch.as_tensor(y[:, None]), robust=task.noisy, settings=settings)
    model.fit()
    cfg = {"in_lbl": task.names, "out_lbl": ["y"], "input_min": task.lo.tolist(), "input_max": task.hi.tolist()}
    return Surrogate(model.eval(), cfg)


def _rmse(sur, task: Task, x_test: np.ndarray, y_test: np.ndarray) -> float:
    return float(np.sqrt(np.mean((sur.predict(x_test)[:, 0] - y_test) ** 2)))


def _suggest(sur, task: Task, x: np.ndarray, y: np.ndarray, goal: str, seed: int) -> np.ndarray:
    import rollfit.analysis.suggest as module
    from rollfit.analysis.suggest import Campaign, suggest

    for key, value in BENCH.items():
        setattr(module, key, value)

    camp = Campaign(x, y[:, None], list(task.names), {}, [], len(x) - 1, [])
    return suggest(sur, BATCH, goal=goal, seed=seed, campaign=camp).inputs


def run_campaign(job: tuple[str, str, int, int, int, bool]) -> dict:
    """One (problem, arm, seed) campaign: the scores after the initial design and each round."""
    import torch
    from scipy.stats import qmc

    name, arm, seed, rounds, test_rows, cheap = job
    _use_settings(cheap)
    torch.set_num_threads(1)
    task = make_task(name)
    span = task.hi - task.lo
    rng = np.random.default_rng(1000 * seed + ARMS.index(arm))
    x_test = task.lo + qmc.LatinHypercube(len(task.lo), seed=77).random(test_rows) * span
    y_test = task.truth(x_test)
    sobol = task.lo + qmc.Sobol(len(task.lo), scramble=True, seed=seed).random(INIT + rounds * BATCH) * span
    x = sobol[:INIT].copy()
    y = task.observe(x, np.random.default_rng(seed))  # the same initial observations in every arm
    rmse, regret, seconds = [], [], []
    t0 = time.perf_counter()
    for r in range(rounds + 1):
        regret.append(float(task.truth(x).min() - task.f_min))
        sur = _fit(task, x, y) if arm != "minimize" or r < rounds else None
        if arm != "minimize":
            rmse.append(_rmse(sur, task, x_test, y_test))
        if r == rounds:
            break
        if arm in ("explore", "minimize"):
            new = _suggest(sur, task, x, y, "explore" if arm == "explore" else "minimize:y", seed + r)
        elif arm == "sobol":
            new = sobol[INIT + r * BATCH: INIT + (r + 1) * BATCH]
        else:
            new = task.lo + rng.random((BATCH, len(task.lo))) * span
        x, y = np.vstack([x, new]), np.concatenate([y, task.observe(new, rng)])
        seconds.append(time.perf_counter() - t0)
    return {"problem": name, "arm": arm, "seed": seed, "f_min": task.f_min,
            "points": [INIT + r * BATCH for r in range(rounds + 1)],
            "rmse": rmse, "regret": regret, "seconds": time.perf_counter() - t0}


def _use_settings(cheap: bool) -> None:
    """This process's settings: the defaults, or ``CHEAP`` (worker processes call it too)."""
    global BENCH, GP_RESTARTS
    BENCH, GP_RESTARTS = (dict(CHEAP), CHEAP_GP_RESTARTS) if cheap else ({}, None)


# ----------------------------------------------------------------------------- summary
def medians(results: list[dict], problem: str, arm: str, metric: str) -> list[float]:
    runs = [r[metric] for r in results if r["problem"] == problem and r["arm"] == arm and r[metric]]
    return np.median(np.array(runs), axis=0).tolist() if runs else []


def _with_true_minimum(res: dict) -> dict:
    """Results saved before ``f_min`` was recorded measured borehole's regret from the
    L-BFGS-B estimate alone: re-based on the true minimum (a corner)."""
    if "f_min" in res or res["problem"] != "borehole":
        return res
    task = make_task("borehole")
    shift = _local_minimum(task.truth, task.lo, task.hi) - task.f_min
    return {**res, "f_min": task.f_min, "regret": [v + shift for v in res["regret"]]}


def first_reaching(curve: list[float], target: float) -> int | None:
    """Index of the first round whose median is at or below ``target``."""
    return next((i for i, v in enumerate(curve) if v <= target * (1 + 1e-9)), None)


def checks(results: list[dict], problems: list[str], rounds: int) -> list[dict]:
    """Issue 13's done-when, per problem, on the medians."""
    total = INIT + rounds * BATCH
    out = []
    for p in problems:
        reg_m, reg_s = medians(results, p, "minimize", "regret"), medians(results, p, "sobol", "regret")
        rm_e, rm_s = medians(results, p, "explore", "rmse"), medians(results, p, "sobol", "rmse")
        k_min = first_reaching(reg_m, reg_s[-1])
        k_exp = first_reaching(rm_e, rm_s[-1])
        pts = lambda k: None if k is None else INIT + k * BATCH  # noqa: E731
        out.append({"problem": p, "sobol_final_regret": reg_s[-1], "minimize_points_to_reach": pts(k_min),
                    "minimize_ok": k_min is not None and pts(k_min) <= 0.5 * total,
                    "sobol_final_rmse": rm_s[-1], "explore_final_rmse": rm_e[-1],
                    "explore_not_worse": rm_e[-1] <= rm_s[-1] * (1 + 1e-9),
                    "explore_points_to_reach": pts(k_exp),
                    "explore_ok_80": k_exp is not None and pts(k_exp) <= 0.8 * total})
    return out


def _settings_text(gp_restarts: int | None, bench: dict) -> str:
    if gp_restarts is None and not bench:
        return "with the kind's default starts; suggest with its defaults"
    return f"from {gp_restarts} start(s); suggest with {bench}"


def markdown(results: list[dict], problems: list[str], rounds: int, seeds: int, wall: float) -> str:
    total = INIT + rounds * BATCH
    lines = [f"Median of {seeds} seeds; {INIT} Sobol points, then {rounds} rounds of {BATCH}; model gp (robust_gp "
             f"on the noisy rollout surface) fitted {_settings_text(GP_RESTARTS, BENCH)}. "
             f"Wall time of the run {wall / 60:.1f} min.", ""]
    for metric, arms, title in (("rmse", ("explore", "sobol", "random"), "RMSE vs the noise-free truth"),
                                ("regret", ("minimize", "sobol", "random"), "simple regret (best true value - minimum)")):
        lines += [f"**{title}**", "", "| problem | arm | " + " | ".join(str(INIT + r * BATCH) for r in range(rounds + 1))
                  + " |", "|---|---|" + "---:|" * (rounds + 1)]
        for p in problems:
            for arm in arms:
                m = medians(results, p, arm, metric)
                lines.append(f"| {p} | {arm} | " + " | ".join(f"{v:.4g}" for v in m) + " |")
        lines.append("")
    lines += ["**Done-when (issue 13)**", "",
              f"| problem | minimize reaches Sobol's final regret at (<= {0.5 * total:g} of {total} points) | "
              f"explore final RMSE vs Sobol's | explore reaches Sobol's final RMSE at (<= {0.8 * total:g}) |",
              "|---|---|---|---|"]
    for c in checks(results, problems, rounds):
        mark = lambda ok: "yes" if ok else "no"  # noqa: E731
        lines.append(f"| {c['problem']} | {c['minimize_points_to_reach'] or 'not reached'} "
                     f"({mark(c['minimize_ok'])}) | {c['explore_final_rmse']:.4g} vs {c['sobol_final_rmse']:.4g} "
                     f"({mark(c['explore_not_worse'])}) | {c['explore_points_to_reach'] or 'not reached'} "
                     f"({mark(c['explore_ok_80'])}) |")
    return "\n".join(lines) + "\n"


def summary_table(results: list[dict], problems: list[str], rounds: int) -> str:
    """The short table README quotes (between ``<!-- suggest:start -->`` and ``<!-- suggest:end -->``)."""
    total = INIT + rounds * BATCH
    lines = ["| problem | minimize: simulations to reach Sobol's final regret | final regret, minimize / Sobol "
             "| explore: final RMSE / Sobol's | explore: simulations to reach Sobol's final RMSE |",
             "|---|---|---|---|---|"]
    for c in checks(results, problems, rounds):
        p = c["problem"]
        reached = lambda k: f"{k} of {total}" if k is not None else f"not in {total}"  # noqa: E731
        final = medians(results, p, "minimize", "regret")[-1]
        lines.append(f"| {p} | {reached(c['minimize_points_to_reach'])} | {final:.2g} / {c['sobol_final_regret']:.2g} "
                     f"| {c['explore_final_rmse']:.3g} / {c['sobol_final_rmse']:.3g} "
                     f"| {reached(c['explore_points_to_reach'])} |")
    return "\n".join(lines) + "\n"


def saved_summary(path: Path) -> str:
    """``summary_table`` of a saved results file (whole seeds only, as ``main`` tables them)."""
    saved = json.loads(path.read_text())
    results = saved["results"]
    problems = sorted({r["problem"] for r in results}, key=lambda p: (PROBLEMS + (p,)).index(p))
    rounds = len(results[0]["points"]) - 1
    return summary_table(whole_seeds(results, problems), problems, rounds)


def whole_seeds(results: list[dict], problems: list[str]) -> list[dict]:
    """The campaigns of seeds that ran every arm of every problem (re-based on true minima)."""
    done = sorted({r["seed"] for r in results if all(
        any(q["seed"] == r["seed"] and q["problem"] == p and q["arm"] == a for q in results)
        for p in problems for a in ARMS)})
    return [_with_true_minimum(r) for r in results if r["seed"] in done]


def plot(results: list[dict], problems: list[str], rounds: int, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0 * len(problems), 6.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(problems), squeeze=False)
    pts = [INIT + r * BATCH for r in range(rounds + 1)]
    style = {"explore": "C0-o", "minimize": "C3-o", "sobol": "k--s", "random": "C7:^"}
    for j, p in enumerate(problems):
        for row, (metric, arms) in enumerate((("rmse", ("explore", "sobol", "random")),
                                              ("regret", ("minimize", "sobol", "random")))):
            ax = axes[row, j]
            for arm in arms:
                m = medians(results, p, arm, metric)
                if m:
                    ax.plot(pts, np.maximum(m, 1e-12), style[arm], ms=3, label=arm)
            ax.set_yscale("log")
            ax.set(title=f"{p}: {'RMSE vs truth' if metric == 'rmse' else 'simple regret'}", xlabel="simulations")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _run_all(args: argparse.Namespace, seeds: int, rounds: int, test_rows: int, path: Path) -> tuple[list[dict], float]:
    """Every campaign, seed by seed; the results file is rewritten after each one."""
    jobs = [(p, arm, s, rounds, test_rows, args.cheap) for s in range(args.first_seed, args.first_seed + seeds)
            for p in args.problems for arm in args.arms]
    return saving_pool.run_saving(
        run_campaign, jobs, args.workers, path.parent, path.stem,
        lambda res: f"{res['problem']:>9} {res['arm']:>8} seed {res['seed']}: rmse {['%.3g' % v for v in res['rmse']]} "
                    f"regret {['%.3g' % v for v in res['regret']]} ({res['seconds']:.0f} s)",
        extra={"cpus": os.cpu_count(), "bench": BENCH, "gp_restarts": GP_RESTARTS})


def merge_runs(path: Path, other: Path) -> None:
    """Add ``other``'s campaigns to the results file ``path`` (``other`` wins a campaign both
    ran); the wall time is the sum (the runs' machine time), the settings must agree."""
    mine, theirs = json.loads(path.read_text()), json.loads(other.read_text())
    if (mine.get("bench"), mine.get("gp_restarts")) != (theirs.get("bench"), theirs.get("gp_restarts")):
        raise SystemExit(f"--merge: expected runs with the same settings, but {other} has "
                         f"{theirs.get('bench')}, {theirs.get('gp_restarts')} and {path} {mine.get('bench')}, "
                         f"{mine.get('gp_restarts')}")
    key = lambda r: (r["problem"], r["arm"], r["seed"])  # noqa: E731
    taken = {key(r) for r in theirs["results"]}
    mine["results"] = [r for r in mine["results"] if key(r) not in taken] + theirs["results"]
    mine["wall_s"] = mine["wall_s"] + theirs["wall_s"]
    path.write_text(json.dumps(mine, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 3 rounds, small test sets (a smoke run)")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds (default {SEEDS}; --quick: 2)")
    parser.add_argument("--workers", type=int, default=1, help="campaigns run at once (processes, one thread each)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for suggest.json/.md/.png")
    parser.add_argument("--summarize", action="store_true", help="redraw the table and plot from the saved json")
    parser.add_argument("--cheap", action="store_true", help="1 GP start, 2 optimizer starts, 128 integration points")
    parser.add_argument("--readme", action="store_true", help="paste the summary table into README.md's suggest block")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one (a run split over processes)")
    parser.add_argument("--merge", default=None, help="add the campaigns of another run's folder to --out's, and table them")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS,
                        help="run only these arms (a partial run: table it by merging it into a whole one)")
    args = parser.parse_args(argv)
    _use_settings(args.cheap)
    seeds = args.seeds or (2 if args.quick else SEEDS)
    rounds, test_rows = (3, 500) if args.quick else (ROUNDS, 2000)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "suggest_quick" if args.quick else "suggest"
    if args.merge:
        merge_runs(out / f"{tag}.json", Path(args.merge) / f"{tag}.json")
    if args.summarize or args.merge:
        saved = json.loads((out / f"{tag}.json").read_text())
        results, wall = saved["results"], saved["wall_s"]
        _use_settings(saved.get("bench") == CHEAP)  # the table names the settings the saved run used
    else:
        results, wall = _run_all(args, seeds, rounds, test_rows, out / f"{tag}.json")
        if set(args.arms) != set(ARMS):
            print(f"partial run ({', '.join(args.arms)}): saved {out / f'{tag}.json'}; table it with --merge")
            return 0
    results = whole_seeds(results, args.problems)
    table = markdown(results, args.problems, rounds, len({r["seed"] for r in results}), wall)
    (out / f"{tag}.md").write_text(table)
    plot(results, args.problems, rounds, out / f"{tag}.png")
    if args.readme:
        readme_block.paste("suggest", summary_table(results, args.problems, rounds))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
