"""Where an exact GP stops fitting in time and memory: cost of the ``gp`` kind by training rows.

For each row count (13 inputs, the synthetic rollout campaign, one thread), in a fresh process
so that its peak memory is its own: the time of one marginal-likelihood evaluation with its
gradient (what every L-BFGS step costs, after a warm-up), and with ``--fit-rows`` a whole
one-start fit (``model.gp.fit_gp``) with its number of L-BFGS steps. CPU seconds are reported
beside wall seconds: on a shared machine they are what one free core would take.
``model.gp_max_rows`` (``config.GP_MAX_ROWS``) is chosen from this table (benchmarks/RESULTS.md,
"Gaussian processes").

    python benchmarks/bench_gp_size.py --rows 1000 2000 3000 5000 --fit-rows 1000 2000
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time


def measure(rows: int, fit: bool) -> dict:
    """One measurement in this process (the child): eval or fit cost and peak memory."""
    import torch
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from rollfit.data.synthetic import campaign_rows
    from rollfit.model import gp as G

    torch.set_num_threads(1)
    x, y, _ = campaign_rows(rows, 13, seed=0)
    model = G.make_gp(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)[:, None])
    if fit:
        steps = [0]
        scipy_fit = G._quiet_scipy

        def counting(mll, **kwargs):
            return scipy_fit(mll, callback=lambda params, res: steps.__setitem__(0, res.step), **kwargs)

        G._quiet_scipy = counting
        wall, cpu = time.perf_counter(), time.process_time()
        G.fit_gp(model, dataclasses.replace(G.DEFAULT_SETTINGS, restarts=1))
        out = {"what": "fit, one start", "lbfgs_steps": steps[0], "wall_s": time.perf_counter() - wall,
               "cpu_s": time.process_time() - cpu}
    else:
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        mll.train()
        reps = 3 if rows <= 2000 else 1

        def evaluate():
            (-mll(model(*model.train_inputs), model.train_targets)).backward()

        with G.exact():
            evaluate()  # warm-up
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(reps):
                evaluate()
        out = {"what": f"likelihood + gradient (mean of {reps})", "wall_s": (time.perf_counter() - wall) / reps,
               "cpu_s": (time.process_time() - cpu) / reps}
    out.update(rows=rows, wall_s=round(out["wall_s"], 2), cpu_s=round(out["cpu_s"], 2),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 2000, 3000, 5000], help="row counts to time one evaluation at")
    ap.add_argument("--fit-rows", type=int, nargs="*", default=[1000, 2000], help="row counts to time a whole fit at")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1] == "fit")))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print("| rows | measured | wall s | CPU s | peak memory MB | L-BFGS steps |\n|---|---|---|---|---|---|")
    for rows, mode in [(r, "eval") for r in args.rows] + [(r, "fit") for r in args.fit_rows]:
        res = subprocess.run([sys.executable, __file__, "--child", str(rows), mode], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            print(f"| {rows} | {mode} failed: {res.stderr.strip().splitlines()[-1:]} | | | | |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"| {r['rows']} | {r['what']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']} | {r.get('lbfgs_steps', '')} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
