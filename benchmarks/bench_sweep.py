"""Sweep wall time: 8 trials with 1 vs 2 trials at once (Ray Tune, local).

    python benchmarks/bench_sweep.py [--trials 8] [--epochs 300] [--rows 300] [--repeat 2]

Runs ``rollfit sweep`` (a fresh local Ray each time, so Ray's start-up is in the wall time
and the same in both) on a synthetic demo file with the seed's network, over a space of
learning rate and layer widths, without early stopping (``--no-early-stop``: every trial
runs all epochs, so both settings do the same work). With ``--concurrent 1`` a trial
gets all cores; with ``--concurrent 2`` each of two trials gets half. Settings run
interleaved, ``--repeat`` times. Needs ``pip install "rollfit[ray]"``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACE = "trainer.lr: {loguniform: [0.001, 0.05]}\nmodel.layers: {choice: [[64, 32], [32, 32]]}\n"


def sweep_once(data: Path, space: Path, out: Path, trials: int, concurrent: int, epochs: int, cache: Path) -> float:
    """Wall seconds of one ``rollfit sweep`` subprocess."""
    cmd = [sys.executable, "-m", "rollfit", "sweep", "--space", str(space), "--output", str(out),
           "--samples", str(trials), "--concurrent", str(concurrent), "--no-early-stop",
           f"trainer.max_epochs={epochs}", "trainer.log_period=50", "trainer.report=false", "data.train_split=0.8",
           "--hdf5", str(data)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "ROLLFIT_CACHE_DIR": str(cache)})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    from rollfit.data.synthetic import make_demo_file

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_demo_file(tmp / "demo.h5", n=args.rows, seed=0)
        (tmp / "space.yaml").write_text(SPACE)
        for rep in range(args.repeat):
            for concurrent in (1, 2):
                out = tmp / f"c{concurrent}_r{rep}"
                wall = sweep_once(data, tmp / "space.yaml", out, args.trials, concurrent, args.epochs, tmp / "cache")
                load = os.getloadavg()[0]
                results.append({"concurrent": concurrent, "repeat": rep, "wall_s": wall, "load1": load})
                print(f"{args.trials} trials, {concurrent} at once, run {rep + 1}: {wall:6.1f} s wall, "
                      f"1-min load {load:.1f} on {os.cpu_count()} cores", flush=True)
    for c in (1, 2):
        walls = sorted(r["wall_s"] for r in results if r["concurrent"] == c)
        print(f"{c} at once: best {walls[0]:.1f} s, all {', '.join(f'{w:.1f}' for w in walls)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
