"""``rollfit train``: train a surrogate from a YAML config and rollout file(s).

``--resume RUN_OR_CKPT`` continues an interrupted run exactly where its newest complete
checkpoint left it; ``--init-from RUN_OR_CKPT`` starts a new run from another run's weights
(fine-tuning, fresh optimizer). SIGINT/SIGTERM end a run with a checkpoint and print the
command that resumes it (docs/guide.md, Resume, fine-tune, interruptions). ``--output`` must
be new or empty, or hold an old run that ``--overwrite`` replaces. Arguments, files, the
config and a busy run folder are checked before torch is imported (``preflight``).
"""
from __future__ import annotations

ORDER = 1

import argparse
import os
import sys
from pathlib import Path

from ..errors import ConfigError
from .args import check_overrides, check_paths, check_run, command, integer


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "train", "config", "hdf5", "activation", "overrides", help="train a surrogate", description=(
        "Train a surrogate. Overrides are dotted keys, e.g. trainer.max_epochs=200 model.layers=[128,64]. "
        "Ctrl-C (or SIGTERM) stops after the current epoch with a checkpoint; --resume continues from it."))
    p.add_argument("--output", metavar="DIR", help="new run folder (default: a new rollfit_runs/version_N next to "
                                                   "the data)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run in --output (default: an existing run there is an error)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="RUN_OR_CKPT",
                       help="continue this run folder from its newest complete checkpoint (or this checkpoint); "
                            "only epochs, periods, checkpoint cadence, progress, report and device may change")
    start.add_argument("--init-from", metavar="RUN_OR_CKPT",
                       help="start from this run's weights (rollfit's or the original pipeline's) with a fresh "
                            "optimizer: fine-tuning; architecture and labels come from the checkpoint")
    p.add_argument("--nproc", type=integer(1, 1024), metavar="N",
                   help="data-parallel training in N processes on this machine: shorthand for "
                        "torchrun --standalone --nproc_per_node N -m rollfit train ... "
                        "(docs/guide.md, Distributed training)")
    p.set_defaults(func=run)


def hdf5_arg(paths: list[str]):
    """``--hdf5`` as stored in the run config: absolute, so the run resumes from any folder."""
    full = [os.path.abspath(os.path.expanduser(p)) for p in paths]
    return full if len(full) > 1 else full[0]


def config_from_args(args: argparse.Namespace):
    """The validated config of ``--config``, overrides and ``--hdf5``; it must name the data."""
    from ..config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.hdf5:
        cfg.data.hdf5_path = hdf5_arg(args.hdf5)
    if cfg.data.hdf5_path is None:
        where = f"{args.config}: data.hdf5_path" if args.config else "--hdf5"
        raise ConfigError(f"{where}: expected the rollout file(s) to train on, but got none; "
                          f"pass --hdf5 PATH (or set data.hdf5_path in the config)")
    return cfg


def preflight(args: argparse.Namespace):
    """Every check that needs no torch: arguments, files and the config (None with --resume)."""
    check_overrides(args.overrides)
    check_paths(args.hdf5)
    check_run(args.resume)
    check_run(args.init_from)
    if args.resume and args.output:
        raise ConfigError(f"--output: expected no --output with --resume (a resumed run continues in its own "
                          f"folder), but got '{args.output}'")
    if args.resume and args.overwrite:
        raise ConfigError("--overwrite: expected no --overwrite with --resume (a resumed run continues its own "
                          "checkpoints), but got both")
    if args.resume:
        from ..config import load_config

        config = load_config(args.config, args.overrides) if args.config else None
        probe_lock(args.resume)
        return config
    cfg = config_from_args(args)
    probe_lock(args.output)
    return cfg


def probe_lock(path) -> None:
    """A run folder another process is writing is refused now, not after torch is imported:
    its lock is taken and given back at once (the pipeline takes it for the run's life)."""
    from ..runs.folder import RunFolder

    if path is None or not Path(path).exists() or os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 holds the lock: the other ranks must not touch it
    folder = RunFolder.at(path) if Path(path).is_file() else RunFolder(path)
    if folder.lock_path.exists():
        folder.lock().acquire().release()


def run(args: argparse.Namespace) -> int:
    cfg = preflight(args)
    from ..training.signals import TrainingInterrupted

    if args.nproc is not None:
        return launch_workers(args)
    try:
        result = resume_run(args, cfg) if args.resume else new_run(args, cfg)
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
    for line in model_lines(result.last_checkpoint):
        print(line)
    return 0


def model_lines(path) -> list[str]:
    """What the fitted model's checkpoint says beyond the losses: the kind ``auto`` chose and the
    rows a robust GP flagged as gross outliers (their param_idx, to look them up in the files)."""
    from ..runs.checkpoint import load_checkpoint

    cfg = load_checkpoint(path)["config"] if path is not None else {}
    lines = []
    if cfg.get("auto"):
        lines.append(f"auto chose {cfg.get('kind')} by {cfg['auto'].get('folds', '?')}-fold cross-validation "
                     "(table: metrics_auto_cv.json, report.html)")
    if cfg.get("kind") == "robust_gp":
        flagged = sorted({int(o["param_idx"]) for o in cfg.get("outliers") or []})
        shown = ", ".join(map(str, flagged[:20])) + (f" (+{len(flagged) - 20} more)" if len(flagged) > 20 else "")
        lines.append(f"outliers flagged by robust_gp: {len(flagged)} group(s)" + (f": param_idx {shown}" if flagged else ""))
    return lines


def launch_workers(args: argparse.Namespace) -> int:
    """``--nproc N``: the same command in N torchrun workers; their errors are printed here, once."""
    from .nproc import argv_without, launch, outcome, status_folder

    with status_folder() as folder:
        code = launch(args.nproc, ["train", *argv_without(args, args.parser)])
        lines, worker_code = outcome(folder)
    for line in lines:
        print(line, file=sys.stderr)
    return code or worker_code


def new_run(args: argparse.Namespace, cfg):
    """A fresh run, or a fine-tuning run with ``--init-from``."""
    from ..pipeline.run import train

    return train(cfg, args.output, init_from=args.init_from, init_activation=args.activation,
                 overwrite=args.overwrite)


def resume_run(args: argparse.Namespace, config):
    """Continue ``--resume``'s run (``config``: a new ``--config`` or None); says which checkpoint it starts from."""
    from ..pipeline.run import resume
    from ..runs.checkpoint import find_resume_checkpoint

    path, ckpt = find_resume_checkpoint(args.resume)
    print(f"resuming from {path} (epoch {int(ckpt['epoch'])})", flush=True)
    overrides = [] if args.config else args.overrides
    return resume(path, overrides, config=config, hdf5=hdf5_arg(args.hdf5) if args.hdf5 else None)
