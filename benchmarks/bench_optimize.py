"""Batched multi-start optimization against one start / one problem at a time (the baseline).

    python benchmarks/bench_optimize.py RUN [--starts 64] [--points 13] [--repeat 2]

RUN is a run folder trained on the demo data (``rollfit demo``). In one process, on the CPU:

- ``multi-start``: the demo question "cheapest stride and cadence at speed 1.0"
  (``gait_stride*gait_cadence=1.0``) with STARTS starts. Baseline: the same optimizer run
  once per start (batch of one, as a multi-start loop of SLSQP calls does), best kept.
  Batched: all starts as one batch (``optimize``).
- ``speed sweep``: the optimum at POINTS speeds from 0.8 to 1.4. Baseline: one ``optimize``
  call per speed. Batched: ``sweep_optimum``, every speed and start in one batch.

Each line gives wall seconds per repeat, and how far the batched answers are from the
baseline's (they should agree to the optimizer's precision).
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from rollfit.analysis.optimize import optimize, sweep_optimum
from rollfit.analysis.surrogate import Surrogate

TARGET = "cot_ma15"
PRODUCT = "gait_stride*gait_cadence"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def point(res) -> np.ndarray:
    return np.array(list(res.inputs.values()))


def multi_start(sur: Surrogate, starts: int):
    """(baseline seconds, batched seconds, max input difference of the winners)."""
    con = [f"{PRODUCT}=1.0"]

    def one_by_one():
        runs = [optimize(sur, TARGET, constraints=con, starts=1, seed=s, distances=False) for s in range(starts)]
        return min((r for r in runs if r.feasible), key=lambda r: r.objective)

    tb, base = timed(one_by_one)
    tn, new = timed(lambda: optimize(sur, TARGET, constraints=con, starts=starts, distances=False))
    return tb, tn, float(np.abs(point(base) - point(new)).max())


def speed_sweep(sur: Surrogate, points: int, starts: int):
    speeds = np.linspace(0.8, 1.4, points)
    tb, base = timed(lambda: [optimize(sur, TARGET, constraints=[f"{PRODUCT}={float(v)!r}"], starts=starts,
                                       distances=False) for v in speeds])
    tn, new = timed(lambda: sweep_optimum(sur, TARGET, {"speed": speeds}, constraints=[f"{PRODUCT}=speed"],
                                          starts=starts, distances=False))
    diff = max(float(np.abs(point(a) - point(b)).max()) for a, b in zip(base, new.results))
    return tb, tn, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--starts", type=int, default=64)
    ap.add_argument("--points", type=int, default=13)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    sur = Surrogate.load(args.run)
    optimize(sur, TARGET, starts=2, steps=16, distances=False)  # warm-up
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; starts={args.starts}, sweep points={args.points}")
    print(f"{'case':<12} {'repeat':>6} {'baseline s':>11} {'batched s':>10} {'speed-up':>9} {'max |dx|':>10}")
    cases = {"multi-start": lambda: multi_start(sur, args.starts),
             "speed sweep": lambda: speed_sweep(sur, args.points, args.starts)}
    for rep in range(args.repeat):
        for name, case in cases.items():
            tb, tn, dx = case()
            print(f"{name:<12} {rep + 1:>6} {tb:>11.2f} {tn:>10.2f} {tb / tn:>8.1f}x {dx:>10.2e}", flush=True)


if __name__ == "__main__":
    main()
