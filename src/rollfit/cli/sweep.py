"""``rollfit sweep``: a hyperparameter sweep on Ray Tune, one run folder per trial."""
from __future__ import annotations

ORDER = 10

import argparse
import os
from pathlib import Path

from .args import COUNT, SEED, LazyChoices, check_file, check_paths, command, integer, load_config_args, number


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "sweep", "config", "hdf5", "overrides",
                help="hyperparameter sweep on Ray Tune (needs rollfit[ray])", description=(
        "Sweep config keys named in SPACE.yaml (e.g. 'trainer.lr: {loguniform: [1e-4, 1e-1]}'; a plain "
        "list is a grid). Each trial is a run folder DIR/trial_NNNNN; DIR also gets results.csv, "
        "best_config.yaml (for rollfit train), sweep_plot.png and sweep.json. ASHA stops lagging trials; "
        "Optuna proposes values when installed. (To trace a trained run's optimum along swept inputs, use "
        "rollfit optimize --vary.)"))
    p.add_argument("--space", required=True, metavar="SPACE.yaml", help="dotted config keys -> distributions")
    p.add_argument("--output", required=True, metavar="DIR", help="new or empty folder for the sweep")
    p.add_argument("--samples", type=COUNT, metavar="N", help="samples of the space (default: 10; 1 pass when it "
                   "has a grid, each grid point then gets N trials)")
    p.add_argument("--address", help="Ray cluster to use: 'auto' or HOST:PORT (default: start Ray locally on "
                   "this machine's cores)")
    p.add_argument("--metric", default="loss/val", choices=LazyChoices(sweep_metrics), metavar="METRIC",
                   help="metric to rank and stop on: %(choices)s (default: %(default)s)")
    p.add_argument("--mode", default="min", choices=("min", "max"), help="minimize or maximize the metric")
    p.add_argument("--concurrent", type=COUNT, metavar="K", help="trials at once (default: one per CPU; the CPUs "
                   "are shared among them)")
    p.add_argument("--gpus-per-trial", type=number(0.0, 1024.0, what="a GPU count"), default=0.0, metavar="G",
                   help="GPUs per trial (fractions share one GPU)")
    p.add_argument("--grace-epochs", type=integer(1, 10**9), metavar="N", help="epochs before ASHA may stop a trial "
                   "(default: max(log_period, max_epochs // 8))")
    p.add_argument("--no-early-stop", action="store_true", help="run every trial to max_epochs (no ASHA)")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seed of the search algorithm")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and status tables")
    p.set_defaults(func=run)


def sweep_metrics() -> tuple[str, ...]:
    from ..sweep.runner import METRICS

    return METRICS


def run(args: argparse.Namespace) -> int:
    from ..sweep.runner import SweepSettings, check_output, check_settings, first_rung, run_sweep
    from ..sweep.space import load_space

    check_paths(args.hdf5)
    check_file(args.space, "--space", "a YAML search space file")
    cfg = load_config_args(args)
    if args.hdf5:
        paths = [os.path.abspath(p) for p in args.hdf5]  # best_config.yaml must work from anywhere
        cfg.data.hdf5_path = paths if len(paths) > 1 else paths[0]
    space = load_space(args.space, cfg)
    settings = SweepSettings(samples=args.samples, address=args.address, metric=args.metric, mode=args.mode,
                             concurrent=args.concurrent, gpus_per_trial=args.gpus_per_trial,
                             grace_epochs=args.grace_epochs, early_stop=not args.no_early_stop, seed=args.seed,
                             verbose=args.verbose)
    check_settings(settings)
    first_rung(cfg, settings)  # refused settings leave no --output folder behind
    check_output(Path(args.output).resolve())
    result = run_sweep(cfg, space, args.output, settings)
    print(f"results: {result.results_csv}")
    if result.best_config is not None:
        print(f"best: {result.rows[0]['trial']} -> {result.best_config} "
              f"(train it: rollfit train --config {result.best_config})")
    if result.plot is not None:
        print(f"plot: {result.plot}")
    return 0 if result.best_config is not None else 1
