"""``rollfit train``: train a surrogate from a YAML config and rollout file(s).

``--resume RUN_OR_CKPT`` continues an interrupted run exactly where its newest complete
checkpoint left it; ``--init-from RUN_OR_CKPT`` starts a new run from another run's weights
(fine-tuning, fresh optimizer). SIGINT/SIGTERM end a run with a checkpoint and print the
command that resumes it (docs/resilience.md).
"""
from __future__ import annotations

ORDER = 1

import argparse
import os
import sys

from ..config import load_config
from ..errors import ConfigError
from .main import add_debug


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a surrogate", description=(
        "Train a surrogate. Overrides are dotted keys, e.g. trainer.max_epochs=200 model.layers=[128,64]. "
        "Ctrl-C (or SIGTERM) stops after the current epoch with a checkpoint; --resume continues from it."))
    p.add_argument("--config", help="YAML config (data/model/trainer sections); default: built-in defaults, "
                   "or the run's own config with --resume")
    p.add_argument("--hdf5", nargs="+", metavar="PATH",
                   help="rollout file(s), a directory or a glob (overrides data.hdf5_path)")
    p.add_argument("--output", help="run folder (default: a new rollfit_runs/version_N next to the data)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="RUN_OR_CKPT",
                       help="continue this run folder from its newest complete checkpoint (or this checkpoint); "
                            "only epochs, periods, checkpoint cadence, progress, report and device may change")
    start.add_argument("--init-from", metavar="RUN_OR_CKPT",
                       help="start from this run's weights (rollfit's or the original pipeline's) with a fresh "
                            "optimizer: fine-tuning; architecture and labels come from the checkpoint")
    p.add_argument("--activation", metavar="NAME",
                   help="activation of an --init-from run of the original pipeline that has no config.yaml")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel training in N processes on this machine: shorthand for "
                        "torchrun --standalone --nproc_per_node N -m rollfit train ... (docs/distributed.md)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. trainer.lr=0.01")
    add_debug(p)
    p.set_defaults(func=run, parser=p)


def hdf5_arg(paths: list[str]):
    """``--hdf5`` as stored in the run config: absolute, so the run resumes from any folder."""
    full = [os.path.abspath(os.path.expanduser(p)) for p in paths]
    return full if len(full) > 1 else full[0]


def config_from_args(args: argparse.Namespace):
    """The validated config of ``--config``, overrides and ``--hdf5``."""
    cfg = load_config(args.config, args.overrides)
    if args.hdf5:
        cfg.data.hdf5_path = hdf5_arg(args.hdf5)
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..training.signals import TrainingInterrupted

    if args.nproc is not None:
        from ..training.distributed import argv_without, launch

        return launch(args.nproc, ["train", *argv_without(args, args.parser)])
    try:
        result = resume_run(args) if args.resume else new_run(args)
    except TrainingInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
            print(f"rollfit train: {exc}", file=sys.stderr)
        return exc.exit_code
    if os.environ.get("RANK", "0") != "0":
        return 0
    m = result.metrics
    print(f"trained on {len(result.table)} rows; final loss/train {m.get('loss/train', float('nan')):.5g}, "
          f"loss/val {m.get('loss/val', float('nan')):.5g}")
    print(f"run folder: {result.run_dir}")
    print(f"last checkpoint: {result.last_checkpoint}")
    return 0


def new_run(args: argparse.Namespace):
    """A fresh run, or a fine-tuning run with ``--init-from``."""
    from ..training.run import train

    return train(config_from_args(args), args.output, init_from=args.init_from, init_activation=args.activation)


def resume_run(args: argparse.Namespace):
    """Continue ``--resume``'s run; says which checkpoint it starts from."""
    from ..training.checkpoint import find_resume_checkpoint
    from ..training.run import resume

    if args.output:
        raise ConfigError(f"--output: expected no --output with --resume (a resumed run continues in its own "
                          f"folder), but got '{args.output}'")
    path, ckpt = find_resume_checkpoint(args.resume)
    print(f"resuming from {path} (epoch {int(ckpt['epoch'])})", flush=True)
    config = load_config(args.config, args.overrides) if args.config else None
    overrides = [] if args.config else args.overrides
    return resume(path, overrides, config=config, hdf5=hdf5_arg(args.hdf5) if args.hdf5 else None)
