"""The training pipeline: config + rollout files -> a complete run folder, then its report.

``train`` starts a run (optionally fine-tuning from another run's weights, ``init_from``);
``resume`` continues one from its newest complete checkpoint, exactly (docs/guide.md, resume).
Both build a ``_Start`` (what differs between them) and go through one path, ``_execute``:
lock the folder, seed, read the data, build the data module, write config and log, fit,
write the report. The folder layout is ``runs.folder.RunFolder``'s.

A run folder belongs to one run: ``train`` into a folder that holds a run is an error
naming ``--resume`` and ``--overwrite``, and ``rollfit.lock`` is held for the run's life.
A folder this call created is removed again when the run fails before training starts.
"""
from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence


from .. import __version__
from ..config import Config, save_config
from ..data.datamodule import HDF5DataModule
from ..data.reader import load_rollouts
from ..data.table import RolloutTable
from ..errors import ConfigError, OutputError
from ..model.network import RegressionNet
from ..runs import checkpoint as ckpt_io
from ..runs.checkpoint import FORMAT_VERSION, find_resume_checkpoint
from ..runs.folder import RunFolder
from ..training import distributed
from ..training.logger import SimpleLogger
from ..training.trainer import resolve_device, seed_everything
from .fitting import FitContext, make_fitter
from .models import build_mlp
from .resume import adopt_init_settings, check_same_data, data_fingerprint, last_logged, reopen_log, resume_config

OnLog = Callable[[int, dict[str, float]], None]


@dataclass
class RunResult:
    """What a finished training run produced."""

    run_dir: Path
    metrics: dict[str, float]
    table: RolloutTable
    last_checkpoint: Path
    resumed_from: Optional[Path] = None


@dataclass
class _Start:
    """What differs between starting a run and continuing one; ``_execute`` does the rest."""

    cfg: Config
    folder: RunFolder
    model: Optional[RegressionNet] = None      # None: a fresh network built from the data
    ckpt: Optional[dict[str, Any]] = None      # resume: the checkpoint to continue from
    ckpt_path: Optional[Path] = None
    meta: dict[str, Any] = field(default_factory=dict)  # extra checkpoint metadata (init_from)
    overwrite: bool = False


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


build_model = build_mlp  # the name older code and tests import


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


def make_data(cfg: Config, table: RolloutTable) -> HDF5DataModule:
    """The split and resident tensors of ``table`` on the configured device."""
    device = resolve_device(cfg.trainer.device, cfg.trainer.engine, rows=len(table))
    return HDF5DataModule(table, cfg.data.batch_size, cfg.data.train_split, cfg.data.split_seed, device).setup()


def init_model(cfg: Config, init_from: str | Path, activation: Optional[str] = None) -> tuple[RegressionNet, Path]:
    """Weights (and normalization) of another run for fine-tuning; its architecture and
    labels are adopted into ``cfg``. Original-pipeline runs load with their raw convention;
    ``activation`` supplies theirs when the run has no config.yaml."""
    model, model_cfg, path = ckpt_io.load_model(init_from, activation, training=True)
    adopt_init_settings(cfg, model_cfg, path)
    return model.train(), path


def check_new_run(folder: RunFolder, overwrite: bool) -> bool:
    """A run folder belongs to one run: refuse one that holds a run unless ``overwrite``.
    True when an old run is there to be cleared (once the new run is ready to start)."""
    marks = folder.run_markers()
    if marks and not overwrite:
        raise OutputError(f"{folder.root}: expected a new or empty run folder, but it holds a run "
                          f"({', '.join(marks)}); continue it with --resume {folder.root}, or replace it "
                          "with --overwrite")
    return bool(marks)


def train(cfg: Config, output: Optional[str | Path] = None, table: Optional[RolloutTable] = None,
          on_log: Optional[OnLog] = None, init_from: Optional[str | Path] = None,
          init_activation: Optional[str] = None, overwrite: bool = False) -> RunResult:
    """Train a model as configured; returns the run folder and the last logged metrics.

    ``output`` must be new or empty (else an error naming ``--resume``/``--overwrite``;
    ``overwrite=True`` clears the old run first); default: a new ``rollfit_runs/version_N``.
    ``on_log(epoch, row)`` is called at every log period (a sweep reports through it).
    ``init_from`` (a run folder or checkpoint, rollfit's or the original pipeline's) starts
    from its weights with a fresh optimizer and schedule (fine-tuning).
    """
    model, meta = None, {}
    if init_from is not None:
        model, init_path = init_model(cfg, init_from, init_activation)
        meta["init_from"] = str(Path(init_path).resolve())
    root = Path(output) if output is not None else default_output_dir(cfg.data.hdf5_path)
    strategy = _strategy(cfg)
    root = strategy.same_path(root)  # under torchrun every rank uses rank 0's (maybe new version_N) folder
    start = _Start(cfg, RunFolder(root), model=model, meta=meta, overwrite=overwrite)
    return _execute(start, table, on_log, strategy)


def resume(run_or_ckpt: str | Path, overrides: Sequence[str] = (), config: Optional[Config] = None,
           hdf5: Any = None, table: Optional[RolloutTable] = None, on_log: Optional[OnLog] = None) -> RunResult:
    """Continue a run from its newest complete checkpoint (or the checkpoint given).

    Model, optimizer, scheduler, epoch, RNG states, split and normalization come from the
    checkpoint; the metrics log is reopened and appended to. The config is the run's own
    (or ``config``) with ``overrides``/``hdf5`` applied; changes other than
    ``resume.ALLOWED_RESUME_CHANGES`` are refused, as is data that differs from the run's.
    On CPU the result is bit-identical to an uninterrupted run.
    """
    path, ckpt = find_resume_checkpoint(run_or_ckpt)
    cfg = resume_config(ckpt, path, overrides, config, hdf5)
    model = ckpt_io.training_model(ckpt, path)
    meta = {k: v for k, v in ckpt["config"].items() if k == "init_from"}
    given = Path(run_or_ckpt)  # a run folder named by the user is the run, whatever its links say
    folder = RunFolder(given if given.is_dir() else RunFolder.of_checkpoint(path).root)
    # any number of processes: checkpoints hold the full state
    return _execute(_Start(cfg, folder, model, ckpt, path, meta), table, on_log, _strategy(cfg))


def _strategy(cfg: Config):
    """``distributed.Local`` for one process, the torchrun group's context under torchrun."""
    return distributed.from_env(cfg.trainer.device) or distributed.Local()


def _execute(start: _Start, table: Optional[RolloutTable], on_log: Optional[OnLog], strategy) -> RunResult:
    """The one path of ``train`` and ``resume``: the writer (rank 0) alone holds the lock and writes files."""
    writer = strategy.is_writer
    folder, created = start.folder, _first_missing(start.folder.root)
    lock = folder.lock()
    if writer:
        lock.acquire()
    try:
        fitter, table, logger = _prepare(start, table, on_log, strategy)
        created = None  # training starts: the folder is the run's from here on
        metrics = fitter.fit() or last_logged(logger)
        trained = start.ckpt is None or fitter.start_epoch < start.cfg.trainer.max_epochs
        if start.cfg.trainer.report and writer and trained:
            write_report_safely(folder.root, table)
    except BaseException:
        if created is not None and writer:  # failed before training: leave no empty run folder behind
            lock.release()
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        lock.release()
    strategy.finish()
    return RunResult(folder.root, metrics, table, fitter.last_checkpoint, resumed_from=start.ckpt_path)


def _first_missing(path: Path) -> Optional[Path]:
    """The outermost folder of ``path`` that does not exist yet (what a run would create)."""
    missing = None
    for p in [path.absolute(), *path.absolute().parents]:
        if p.exists():
            return missing
        missing = p
    return missing


def _prepare(start: _Start, table: Optional[RolloutTable], on_log: Optional[OnLog], strategy):
    """Everything before fitting starts: (the kind's fitter, table, logger)."""
    cfg, folder, writer = start.cfg, start.folder, strategy.is_writer
    replace = writer and start.ckpt is None and check_new_run(folder, start.overwrite)
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    folder.probe()
    if writer:
        folder.remove_stale_temp_files()
    table = table if table is not None else load_table(cfg)
    data = make_data(cfg, table)
    if start.ckpt is not None:
        check_same_data(start.ckpt, start.ckpt_path, table, data)
    if replace:  # --overwrite: the old run goes only now that the new one can start
        folder.clear()
        folder.probe()
    if writer:
        save_config(cfg, folder.config)
    logger = _logger(start, writer)
    logger.log_hyperparams(cfg.to_dict())
    meta = {**checkpoint_meta(cfg, table, data), **start.meta}
    ctx = FitContext(cfg, table, data, folder, logger, meta, on_log, strategy, start.model, start.ckpt, start.ckpt_path)
    return make_fitter(ctx), table, logger


def _logger(start: _Start, writer: bool) -> SimpleLogger:
    """A new metrics log, the resumed run's reopened one, or a quiet one on ranks > 0."""
    if not writer:
        return distributed.QuietLogger(start.folder.logs)
    if start.ckpt is not None:
        return reopen_log(start.folder, start.ckpt, start.ckpt_path)
    return SimpleLogger(start.folder.logs)


def write_report_safely(run_dir: Path, table: RolloutTable) -> None:
    """Write plots/ and report.html; a failure there warns, the trained run is kept."""
    try:
        from ..analysis.report import write_run_report

        write_run_report(run_dir, table=table)
    except Exception as exc:  # a plotting problem must never cost the trained model
        warnings.warn(f"{run_dir}: the run is trained and saved, but its report could not be written "
                      f"({type(exc).__name__}: {exc}); retry with: rollfit report --run {run_dir}", stacklevel=2)
