"""Ensemble training cost (K members as one batched network against one member, in one run)
and the coverage of its 95% intervals on held-out points.

    python benchmarks/bench_ensemble.py [--rows 200,1000,5000] [--members 8] [--epochs 1000]
                                        [--repeat 3] [--threads 1] [--engine auto] [--out results.json]
    python benchmarks/bench_ensemble.py --coverage branin_100,borehole_100,wing_100
                                        [--variants split,bootstrap,plain] [--epochs 3000]

Cost. The issue's bar: an ``ensemble`` of K=8 must cost at most 2.5x the time of one member
on CPU for the example network. Both sides are rollfit's real ``Trainer.fit`` (validation,
plateau scheduler, logging every 50 epochs; checkpoints off) with the example config's
architecture and loss (examples/seed_config.yaml: residual [64, 32] gelu, huber x10, l1 = l2 = 0.001,
input-gradient penalty 0.01, lr 0.1, full batch), on the 13-input synthetic campaign
(``rollfit.data.synthetic.make_campaign``, written once to a temporary folder), for each
``--rows``: ``model.kind: mlp`` (one member) and ``model.kind: ensemble`` with
``model.members: K``. The two are alternated ``--repeat`` times after one warm-up fit each;
the ratio uses the medians of the seconds per epoch. ``--threads`` fixes torch's intra-op
threads for both (one by default: the engine's choice for small steps, and what a shared
2-core machine gives steadily).

Coverage (``--coverage``): for each named problem of ``benchmarks/problems.py`` and each
variant, an ensemble run of the example config (``model.kind=ensemble``, ``--members``,
``--epochs`` epochs, full batch) trained through ``rollfit.pipeline.run.train`` from the
problem's rollout file, loaded with ``Surrogate.load`` (best.ckpt), scored on the problem's
test points: RMSE against the truth and the fraction of new observations inside mean +- 1.96
std. Variants: ``split`` (``data.train_split=0.8``: calibrated on the 20% validation rows),
``bootstrap`` (``model.bootstrap=true``: calibrated on out-of-bag rows), ``plain`` (neither:
calibrated on the training rows, which the run warns under-covers).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from rollfit.config import load_config
from rollfit.data.datamodule import HDF5DataModule
from rollfit.data.reader import load_rollouts
from rollfit.data.synthetic import COT_ATTR, DEFAULT_13_NAMES, make_campaign
from rollfit.pipeline.models import new_model
from rollfit.training.logger import SimpleLogger
from rollfit.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
SEED_CONFIG = REPO / "examples" / "seed_config.yaml"


def example_overrides(rows: int, epochs: int, engine: str) -> list[str]:
    """The example config's trainer and model settings on the 13-input campaign, full batch."""
    ins = "[" + ",".join(DEFAULT_13_NAMES) + "]"
    return [f"data.in_lbl={ins}", f"data.out_lbl=[{COT_ATTR}]", f"data.batch_size={max(rows, 1)}",
            "data.train_split=1.0", "data.cache=false", f"trainer.max_epochs={epochs}", "trainer.progress=false",
            "trainer.report=false", "trainer.save_period=1000000000", f"trainer.engine={engine}"]


def time_fit(table, rows: int, epochs: int, kind: str, members: int, engine: str) -> float:
    """Seconds per epoch of one ``Trainer.fit`` of ``kind`` (checkpoints off, logs to a temp folder)."""
    extra = [f"model.kind={kind}"] + ([f"model.members={members}"] if kind == "ensemble" else [])
    cfg = load_config(str(SEED_CONFIG), example_overrides(rows, epochs, engine) + extra)
    torch.manual_seed(0)
    data = HDF5DataModule(table, cfg.data.batch_size, cfg.data.train_split, 0, "cpu").setup()
    model = new_model(cfg, data)
    with tempfile.TemporaryDirectory(prefix="rollfit-bench-ens-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ensemble's note on training-row calibration
        trainer = Trainer(model, cfg.trainer, data, tmp, SimpleLogger(Path(tmp) / "logs"))
        t0 = time.perf_counter()
        trainer.fit()
        return (time.perf_counter() - t0) / epochs


def bench_rows(folder: Path, rows: int, members: int, epochs: int, repeat: int, engine: str) -> dict[str, Any]:
    """Alternate one member and the ensemble on ``rows`` campaign rows; medians and their ratio."""
    paths = make_campaign(folder / f"campaign_{rows}", rows, 1, seed=0)
    table = load_rollouts([str(p) for p in paths], list(DEFAULT_13_NAMES), [COT_ATTR], cache=False)
    for kind in ("mlp", "ensemble"):  # warm-up: allocations, thread trials
        time_fit(table, len(table.inputs), min(epochs, 100), kind, members, engine)
    one, ens = [], []
    for _ in range(repeat):
        one.append(time_fit(table, len(table.inputs), epochs, "mlp", members, engine))
        ens.append(time_fit(table, len(table.inputs), epochs, "ensemble", members, engine))
    m1, mk = statistics.median(one), statistics.median(ens)
    return {"rows": len(table.inputs), "members": members, "epochs": epochs, "one_member_s_per_epoch": one,
            "ensemble_s_per_epoch": ens, "median_one_ms": m1 * 1e3, "median_ensemble_ms": mk * 1e3,
            "ratio": mk / m1, "load_avg_1min": os.getloadavg()[0]}


VARIANTS = {"split": ["data.train_split=0.8"], "bootstrap": ["model.bootstrap=true"], "plain": []}


def coverage(name: str, variant: str, members: int, epochs: int, folder: Path) -> dict[str, Any]:
    """RMSE and 95% coverage of an ensemble run on one problem of ``benchmarks/problems.py``."""
    import sys

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from problems import OUTPUT, make_problem

    from rollfit.analysis.surrogate import Surrogate
    from rollfit.pipeline.run import train
    from rollfit.runs.checkpoint import load_checkpoint

    p = make_problem(name)
    overrides = ["model.kind=ensemble", f"model.members={members}", f"trainer.max_epochs={epochs}",
                 "trainer.progress=false", "trainer.report=false", "data.cache=false", "trainer.save_period=100000",
                 "trainer.log_period=500", "data.in_lbl=[" + ",".join(p.in_lbl) + "]", f"data.out_lbl=[{OUTPUT}]",
                 "data.batch_size=65536", *VARIANTS[variant]]
    cfg = load_config(str(SEED_CONFIG), overrides)
    cfg.data.hdf5_path = str(p.write(folder / "data"))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # plain: the training-rows note
        run = train(cfg, folder / f"{name}_{variant}").run_dir
    sur = Surrogate.load(run)
    with torch.no_grad():
        mean, std = (t.numpy()[:, 0] for t in sur.model.predict_std(torch.as_tensor(p.x_test, dtype=torch.float32)))
    ck = load_checkpoint(sur.checkpoint)
    return {"problem": name, "variant": variant, "rmse": float(np.sqrt(np.mean((p.y_test - mean) ** 2))),
            "coverage95": float(np.mean(np.abs(p.y_obs - mean) <= 1.96 * std)), "median_std": float(np.median(std)),
            "calibration": ck["config"]["calibration"], "std_scale": ck["model_state_dict"]["std_scale"].tolist(),
            "noise_std": ck["model_state_dict"]["noise_std"].tolist(), "checkpoint": sur.checkpoint.name,
            "seconds": time.perf_counter() - t0}


def main_coverage(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--coverage``: every named problem with every variant, one line each."""
    results = []
    with tempfile.TemporaryDirectory(prefix="rollfit-bench-ens-cov-") as tmp:
        for name in args.coverage.split(","):
            for variant in args.variants.split(","):
                r = coverage(name, variant, args.members, args.epochs, Path(tmp))
                results.append(r)
                print(f"{name:>13} {variant:>9}: coverage of 95% intervals {r['coverage95']:.3f}, RMSE "
                      f"{r['rmse']:.4g}, calibration: {r['calibration']}, scale {r['std_scale'][0]:.3g}, "
                      f"noise {r['noise_std'][0]:.3g} ({r['seconds']:.0f} s)", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="200,1000,5000", help="campaign sizes (groups), comma-separated")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides")
    ap.add_argument("--engine", default="auto", help="trainer.engine for both sides")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument("--coverage", default=None, help="problems of benchmarks/problems.py: measure interval coverage")
    ap.add_argument("--variants", default="split,bootstrap,plain", help="--coverage: " + ", ".join(VARIANTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, torch "
          f"{torch.__version__}, {args.threads} thread(s), engine {args.engine}")
    if args.coverage:
        results = main_coverage(args)
        if args.out:
            Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="rollfit-bench-ens-data-") as tmp:
        for rows in [int(r) for r in args.rows.split(",")]:
            r = bench_rows(Path(tmp), rows, args.members, args.epochs, args.repeat, args.engine)
            results.append(r)
            print(f"{r['rows']:>7} rows: one member {r['median_one_ms']:.3f} ms/epoch, {r['members']} members "
                  f"{r['median_ensemble_ms']:.3f} ms/epoch, ratio {r['ratio']:.2f}x "
                  f"(load {r['load_avg_1min']:.1f})", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
