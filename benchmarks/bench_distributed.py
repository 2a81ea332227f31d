"""Training throughput of 1 vs N data-parallel processes (torchrun, gloo on CPU).

    python benchmarks/bench_distributed.py [--rows 200000] [--epochs 5] [--nproc 2] [--repeat 2]

Writes (once, then reuses) a ``--rows``-group, 13-input synthetic rollout file, then trains
the seed's network and batch size (65,536: mini-batches) on it with ``rollfit train``:

- 1 process, torch's default threads (all cores): what a plain run does;
- 1 process, 1 thread: the per-process baseline of data-parallel scaling;
- N processes (``rollfit train --nproc N``, torchrun on this machine), cores // N threads each.

Throughput is measured from the metrics log's timestamps between the first and the last
logged epoch (log every epoch), so process start-up and data loading are not counted.
Configurations run interleaved, ``--repeat`` times, so a change in machine load hits all.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(path: Path, rows: int) -> Path:
    """A rollout file of ``rows`` successful groups with 13 varied inputs (written once)."""
    from rollfit.data.synthetic import COT_ATTR, campaign_rows, write_rollout_file

    if path.is_file():
        return path
    x, y, _ = campaign_rows(rows, n_inputs_varied=13, seed=0)
    t0 = time.perf_counter()
    write_rollout_file(path, x, {COT_ATTR: y})
    print(f"wrote {path} ({rows} groups) in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def epochs_per_second(run: Path) -> float:
    """Logged epochs per second between the first and last log rows (start-up excluded)."""
    from rollfit.training.logger import find_log, read_rows

    rows = read_rows(find_log(run))
    t = [dt.datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows]
    return (rows[-1]["step"] - rows[0]["step"]) / (t[-1] - t[0])


def train_once(data: Path, out: Path, nproc: int, threads: str, epochs: int, cache: Path) -> float:
    """One ``rollfit train`` (``--nproc`` when nproc > 1) in a subprocess; returns epochs/s."""
    from rollfit.data.synthetic import DEFAULT_13_NAMES

    labels = "[" + ",".join(DEFAULT_13_NAMES) + "]"
    cmd = [sys.executable, "-m", "rollfit", "train", *(["--nproc", str(nproc)] if nproc > 1 else []),
           "--output", str(out), f"data.in_lbl={labels}", f"trainer.max_epochs={epochs}", "trainer.log_period=1",
           f"trainer.save_period={epochs}", "trainer.progress=false", "trainer.report=false", "trainer.device=cpu",
           "--hdf5", str(data)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["ROLLFIT_CACHE_DIR"] = str(cache)
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return epochs_per_second(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "rollfit-bench"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    folder = Path(args.data_dir)
    data = make_data(folder / f"campaign_{args.rows}.h5", args.rows)
    cores = os.cpu_count() or 1
    configs = [(1, "default", f"1 process x {cores} threads"), (1, "1", "1 process x 1 thread"),
               (args.nproc, str(max(1, cores // args.nproc)),
                f"{args.nproc} processes x {max(1, cores // args.nproc)} thread(s)")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):
            for nproc, threads, label in configs:
                out = Path(tmp) / f"n{nproc}_t{threads}_r{rep}"
                eps = train_once(data, out, nproc, threads, args.epochs, folder / "cache")
                load = os.getloadavg()[0]
                results.append({"config": label, "repeat": rep, "epochs_per_s": eps, "rows_per_s": eps * args.rows,
                                "load1": load})
                print(f"{label:28s} run {rep + 1}: {eps:7.4f} epochs/s ({eps * args.rows / 1e3:8.1f} k rows/s), "
                      f"1-min load {load:.1f} on {cores} cores", flush=True)
    base = {label: np.median([r["epochs_per_s"] for r in results if r["config"] == label]) for _, _, label in configs}
    for label, eps in base.items():
        print(f"median {label:28s}: {eps:7.4f} epochs/s; vs 1 process x {cores} threads: "
              f"{eps / base[configs[0][2]]:.2f}x; vs 1 process x 1 thread: {eps / base[configs[1][2]]:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
