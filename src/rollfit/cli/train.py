"""``rollfit train``: train a surrogate from a YAML config and rollout file(s)."""
from __future__ import annotations

ORDER = 1

import argparse

from ..config import load_config
from .main import add_debug


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a surrogate", description=(
        "Train a surrogate. Overrides are dotted keys, e.g. trainer.max_epochs=200 model.layers=[128,64]."))
    p.add_argument("--config", help="YAML config (data/model/trainer sections); default: built-in defaults")
    p.add_argument("--hdf5", nargs="+", metavar="PATH",
                   help="rollout file(s), a directory or a glob (overrides data.hdf5_path)")
    p.add_argument("--output", help="run folder (default: a new rollfit_runs/version_N next to the data)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. trainer.lr=0.01")
    add_debug(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The validated config of ``--config``, overrides and ``--hdf5``."""
    cfg = load_config(args.config, args.overrides)
    if args.hdf5:
        cfg.data.hdf5_path = args.hdf5 if len(args.hdf5) > 1 else args.hdf5[0]
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..training.run import train

    result = train(config_from_args(args), args.output)
    m = result.metrics
    print(f"trained on {len(result.table)} rows; final loss/train {m.get('loss/train', float('nan')):.5g}, "
          f"loss/val {m.get('loss/val', float('nan')):.5g}")
    print(f"run folder: {result.run_dir}")
    print(f"last checkpoint: {result.last_checkpoint}")
    return 0
