"""The training pipeline: config + rollout files -> a complete run folder.

Run folder layout (the original's, plus report files)::

    <run>/config.yaml                 the validated config actually used
    <run>/logs/regression_hdf5_<timestamp>.json (+ _hparams.json)
    <run>/checkpoints/ep_NNNNNN.ckpt  at save_period and at the last epoch
    <run>/plots/, <run>/report.html   when trainer.report is true

``train`` starts a run (optionally fine-tuning from another run's weights, ``init_from``);
``resume`` continues one from its newest complete checkpoint, exactly (docs/resilience.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from .. import __version__
from ..config import Config, save_config
from ..data.datamodule import HDF5DataModule
from ..data.reader import load_rollouts
from ..data.table import RolloutTable
from ..errors import ConfigError
from ..model.network import RegressionNet
from . import checkpoint as ckpt_io
from . import distributed
from .checkpoint import FORMAT_VERSION, find_resume_checkpoint, run_dir_of
from .logger import SimpleLogger
from .resume import (adopt_init_settings, check_same_data, data_fingerprint, last_logged, probe_run_folder,
                     remove_stale_temp_files, reopen_log, resume_config)
from .trainer import Trainer, resolve_device, seed_everything


@dataclass
class RunResult:
    """What a finished training run produced."""

    run_dir: Path
    metrics: dict[str, float]
    table: RolloutTable
    last_checkpoint: Path
    resumed_from: Optional[Path] = None


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
    t, stats = cfg.trainer, data.stats()
    return {
        "format_version": FORMAT_VERSION, "rollfit_version": __version__,
        "in_lbl": list(cfg.data.in_lbl), "out_lbl": list(cfg.data.out_lbl), "out_attr": list(table.out_attr),
        "aliases": dict(cfg.data.aliases), "input_min": stats["input_min"], "input_max": stats["input_max"],
        "loss": {"recon_type": t.recon_type, "recon_delta": t.recon_delta, "recon_weight": t.recon_weight,
                 "recon_start_epoch": t.recon_start_epoch, "l1_weight": t.l1_weight, "l2_weight": t.l2_weight,
                 "grad_weight": t.grad_weight, "grad_space": t.grad_space},
        "data_summary": {"rows": len(table), "train_rows": len(data.train), "val_rows": len(data.val),
                         "groups": table.n_groups, "failed": table.n_failed, "skipped": table.n_skipped,
                         "files": [str(f) for f in table.files], "sha256": data_fingerprint(table)},
        "split": {"train_split": cfg.data.train_split, "split_seed": cfg.data.split_seed},
        "run_config": cfg.to_dict(),
    }


def prepare(cfg: Config, output: Optional[str | Path] = None, table: Optional[RolloutTable] = None,
            model: Optional[RegressionNet] = None):
    """Seed, probe the run folder, read data, build the data module and the model (unless
    ``model`` is given, e.g. fine-tuning); nothing trained yet."""
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    run_dir = Path(output) if output is not None else default_output_dir(cfg.data.hdf5_path)
    probe_run_folder(run_dir)
    table = table if table is not None else load_table(cfg)
    data = make_data(cfg, table)
    model = model if model is not None else build_model(cfg, data)
    return run_dir, table, data, model


def make_data(cfg: Config, table: RolloutTable) -> HDF5DataModule:
    """The split and resident tensors of ``table`` on the configured device."""
    device = resolve_device(cfg.trainer.device, cfg.trainer.compile, rows=len(table))
    return HDF5DataModule(table, cfg.data.batch_size, cfg.data.train_split, cfg.data.split_seed, device).setup()


def init_model(cfg: Config, init_from: str | Path, activation: Optional[str] = None) -> tuple[RegressionNet, Path]:
    """Weights (and normalization) of another run for fine-tuning; its architecture and
    labels are adopted into ``cfg``. Original-pipeline runs load with their raw convention;
    ``activation`` supplies theirs when the run has no config.yaml."""
    model, model_cfg, path = ckpt_io.load_model(init_from, activation)
    adopt_init_settings(cfg, model_cfg, path)
    return model.train(), path


def train(cfg: Config, output: Optional[str | Path] = None, table: Optional[RolloutTable] = None,
          on_log: Optional[Callable[[int, dict[str, float]], None]] = None,
          init_from: Optional[str | Path] = None, init_activation: Optional[str] = None) -> RunResult:
    """Train a model as configured; returns the run folder and the last logged metrics.

    ``on_log(epoch, row)`` is called at every log period (a sweep reports through it).
    ``init_from`` (a run folder or checkpoint, rollfit's or the original pipeline's) starts
    from its weights with a fresh optimizer and schedule (fine-tuning).
    """
    init_path = None
    model = None
    if init_from is not None:
        model, init_path = init_model(cfg, init_from, init_activation)
    dist = distributed.from_env(cfg.trainer.device)  # None unless torchrun started several processes
    if dist is not None:  # every rank must use rank 0's (maybe new version_N) folder
        output = dist.same_path(Path(output) if output is not None else default_output_dir(cfg.data.hdf5_path))
    run_dir, table, data, model = prepare(cfg, output, table, model)
    writer = dist is None or dist.is_writer  # rank 0 alone writes files
    if writer:
        save_config(cfg, run_dir / "config.yaml")
    logger = SimpleLogger(run_dir / "logs") if writer else distributed.QuietLogger(run_dir / "logs")
    logger.log_hyperparams(cfg.to_dict())
    meta = checkpoint_meta(cfg, table, data)
    if init_path is not None:
        meta["init_from"] = str(Path(init_path).resolve())
    trainer = Trainer(model, cfg.trainer, data, run_dir, logger, meta, on_log=on_log, dist=dist)
    metrics = trainer.fit()
    if cfg.trainer.report and writer:
        write_report_safely(run_dir, table)
    if dist is not None:
        dist.finish()
    return RunResult(run_dir, metrics, table, trainer.last_checkpoint)


def resume(run_or_ckpt: str | Path, overrides: Sequence[str] = (), config: Optional[Config] = None,
           hdf5: Any = None, table: Optional[RolloutTable] = None,
           on_log: Optional[Callable[[int, dict[str, float]], None]] = None) -> RunResult:
    """Continue a run from its newest complete checkpoint (or the checkpoint given).

    Model, optimizer, scheduler, epoch, RNG states, split and normalization come from the
    checkpoint; the metrics log is reopened and appended to. The config is the run's own
    (or ``config``) with ``overrides``/``hdf5`` applied; changes other than
    ``resume.ALLOWED_RESUME_CHANGES`` are refused, as is data that differs from the run's.
    On CPU the result is bit-identical to an uninterrupted run.
    """
    path, ckpt = find_resume_checkpoint(run_or_ckpt)
    run_dir = run_dir_of(path)
    cfg = resume_config(ckpt, path, overrides, config, hdf5)
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    dist = distributed.from_env(cfg.trainer.device)  # any number of processes: checkpoints hold the full state
    writer = dist is None or dist.is_writer
    probe_run_folder(run_dir)
    if writer:
        remove_stale_temp_files(run_dir)
    table = table if table is not None else load_table(cfg)
    data = make_data(cfg, table)
    check_same_data(ckpt, path, table, data)
    model = ckpt_io.build_model(ckpt_io.model_config(ckpt, path))
    ckpt_io.load_weights(model, ckpt["model_state_dict"], path)
    if writer:
        save_config(cfg, run_dir / "config.yaml")
    logger = reopen_log(run_dir, ckpt) if writer else distributed.QuietLogger(run_dir / "logs")
    logger.log_hyperparams(cfg.to_dict())
    meta = {**checkpoint_meta(cfg, table, data),
            **{k: v for k, v in ckpt["config"].items() if k == "init_from"}}
    trainer = Trainer(model.train(), cfg.trainer, data, run_dir, logger, meta, on_log=on_log, dist=dist)
    trainer.load_state(ckpt)
    trainer.last_checkpoint = path
    metrics = trainer.fit() or last_logged(logger)
    if cfg.trainer.report and trainer.start_epoch < cfg.trainer.max_epochs and writer:
        write_report_safely(run_dir, table)
    if dist is not None:
        dist.finish()
    return RunResult(run_dir, metrics, table, trainer.last_checkpoint, resumed_from=path)


def write_report_safely(run_dir: Path, table: RolloutTable) -> None:
    """Write plots/ and report.html; a failure there warns, the trained run is kept."""
    import warnings

    try:
        from ..analysis.report import write_run_report

        write_run_report(run_dir, table=table)
    except Exception as exc:  # a plotting problem must never cost the trained model
        warnings.warn(f"{run_dir}: the run is trained and saved, but its report could not be written "
                      f"({type(exc).__name__}: {exc}); retry with: rollfit report --run {run_dir}", stacklevel=2)
