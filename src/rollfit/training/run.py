"""The training pipeline: config + rollout files -> a complete run folder.

Run folder layout (the original's, plus report files)::

    <run>/config.yaml                 the validated config actually used
    <run>/logs/regression_hdf5_<timestamp>.json (+ _hparams.json)
    <run>/checkpoints/ep_NNNNNN.ckpt  at save_period and at the last epoch
    <run>/plots/, <run>/report.html   when trainer.report is true
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .. import __version__
from ..config import Config, save_config
from ..data.datamodule import HDF5DataModule
from ..data.reader import load_rollouts
from ..data.table import RolloutTable
from ..errors import ConfigError
from ..io import check_writable
from ..model.network import RegressionNet
from .checkpoint import FORMAT_VERSION, list_checkpoints
from .logger import SimpleLogger
from .trainer import Trainer, resolve_device, seed_everything


@dataclass
class RunResult:
    """What a finished training run produced."""

    run_dir: Path
    metrics: dict[str, float]
    table: RolloutTable
    last_checkpoint: Path


def default_output_dir(hdf5_path: Any) -> Path:
    """A new ``rollfit_runs/version_N`` folder next to the (first) data file, as the original did."""
    first = Path(hdf5_path[0] if isinstance(hdf5_path, (list, tuple)) else hdf5_path)
    base = (first if first.is_dir() else first.parent) / "rollfit_runs"
    taken = [int(m.group(1)) for p in base.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return base / f"version_{max(taken, default=-1) + 1}"


def load_table(cfg: Config) -> RolloutTable:
    """Read the rows a config asks for (through the cache)."""
    d = cfg.data
    if d.hdf5_path is None:
        raise ConfigError("data.hdf5_path: expected a rollout file, directory or glob, but got none; "
                          "pass --hdf5 PATH or set data.hdf5_path")
    return load_rollouts(d.hdf5_path, d.in_lbl, d.out_lbl, aliases=d.aliases, on_missing=d.on_missing,
                         on_nonfinite=d.on_nonfinite, cache=d.cache, cache_dir=d.cache_dir,
                         workers=d.workers or None)


def build_model(cfg: Config, data: HDF5DataModule) -> RegressionNet:
    """A fresh network with the data's normalization statistics inside."""
    t = torch.tensor
    return RegressionNet(len(cfg.data.in_lbl), len(cfg.data.out_lbl), cfg.model.layers,
                         input_mean=t(data.input_mean), input_std=t(data.input_std),
                         target_mean=t(data.target_mean), target_std=t(data.target_std),
                         residual=cfg.model.residual, activation=cfg.model.activation)


def checkpoint_meta(cfg: Config, table: RolloutTable, data: HDF5DataModule) -> dict[str, Any]:
    """What a checkpoint needs to stand alone, beyond the network's constructor arguments."""
    t = cfg.trainer
    return {
        "format_version": FORMAT_VERSION, "rollfit_version": __version__,
        "in_lbl": list(cfg.data.in_lbl), "out_lbl": list(cfg.data.out_lbl), "out_attr": list(table.out_attr),
        "aliases": dict(cfg.data.aliases), "input_min": data.stats()["input_min"],
        "input_max": data.stats()["input_max"],
        "loss": {"recon_type": t.recon_type, "recon_delta": t.recon_delta, "recon_weight": t.recon_weight,
                 "recon_start_epoch": t.recon_start_epoch, "l1_weight": t.l1_weight, "l2_weight": t.l2_weight,
                 "grad_weight": t.grad_weight},
        "data_summary": {"rows": len(table), "train_rows": len(data.train), "val_rows": len(data.val),
                         "groups": table.n_groups, "failed": table.n_failed, "skipped": table.n_skipped,
                         "files": [str(f) for f in table.files]},
        "split": {"train_split": cfg.data.train_split, "split_seed": cfg.data.split_seed},
        "run_config": cfg.to_dict(),
    }


def prepare(cfg: Config, output: Optional[str | Path] = None, table: Optional[RolloutTable] = None):
    """Seed, read data, build the data module, the model and the run folder; nothing trained yet."""
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    run_dir = Path(output) if output is not None else default_output_dir(cfg.data.hdf5_path)
    check_writable(run_dir)
    table = table if table is not None else load_table(cfg)
    device = resolve_device(cfg.trainer.device)
    data = HDF5DataModule(table, cfg.data.batch_size, cfg.data.train_split, cfg.data.split_seed, device).setup()
    model = build_model(cfg, data)
    return run_dir, table, data, model


def train(cfg: Config, output: Optional[str | Path] = None, table: Optional[RolloutTable] = None,
          on_log: Optional[Callable[[int, dict[str, float]], None]] = None) -> RunResult:
    """Train a model as configured; returns the run folder and the last logged metrics.

    ``on_log(epoch, row)`` is called at every log period (a sweep reports through it).
    """
    run_dir, table, data, model = prepare(cfg, output, table)
    save_config(cfg, run_dir / "config.yaml")
    logger = SimpleLogger(run_dir / "logs")
    logger.log_hyperparams(cfg.to_dict())
    trainer = Trainer(model, cfg.trainer, data, run_dir, logger, checkpoint_meta(cfg, table, data), on_log=on_log)
    metrics = trainer.fit()
    if cfg.trainer.report:
        write_report_safely(run_dir, table)
    return RunResult(run_dir, metrics, table, list_checkpoints(run_dir)[-1])


def write_report_safely(run_dir: Path, table: RolloutTable) -> None:
    """Write plots/ and report.html; a failure there warns, the trained run is kept."""
    import warnings

    try:
        from ..analysis.report import write_run_report

        write_run_report(run_dir, table=table)
    except Exception as exc:  # a plotting problem must never cost the trained model
        warnings.warn(f"{run_dir}: the run is trained and saved, but its report could not be written "
                      f"({type(exc).__name__}: {exc}); retry with: rollfit report --run {run_dir}", stacklevel=2)
