"""The checks and bookkeeping behind ``resume`` and ``--init-from`` (``pipeline.run`` drives them).

Resuming continues the same experiment, so the config may change only in ways that do
not change what is learned (``ALLOWED_RESUME_CHANGES``: epochs, periods, checkpoint
cadence, progress/report, device and engine); the data must be the rows the run was
trained on (row counts, split sizes and a SHA-256 of the table, recorded in each
checkpoint); the metrics log is reopened (by a name confined to ``logs/``) and cut back to
the checkpoint's epoch. ``--init-from`` (fine-tuning) takes the architecture and labels
from the checkpoint.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..config import Config, apply_overrides, validate
from ..data.datamodule import HDF5DataModule
from ..data.table import RolloutTable
from ..errors import ConfigError, DataError
from ..runs.folder import RunFolder
from ..training.logger import SimpleLogger, find_log

ALLOWED_RESUME_CHANGES = (
    "trainer.max_epochs", "trainer.log_period", "trainer.save_period", "trainer.checkpoint_every_minutes",
    "trainer.keep_last", "trainer.progress", "trainer.report", "trainer.on_nonfinite", "trainer.device",
    "trainer.engine", "trainer.threads", "trainer.deterministic", "data.hdf5_path", "data.cache", "data.cache_dir",
    "data.workers",
)


def data_fingerprint(table: RolloutTable) -> str:
    """SHA-256 of the table's inputs and targets (float32, row order): the rows a run saw."""
    h = hashlib.sha256()
    for arr in (table.inputs, table.targets):
        a = np.ascontiguousarray(arr, dtype=np.float32)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def flat_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``{"trainer": {"lr": 0.1}}`` -> ``{"trainer.lr": 0.1}`` (sections one level deep)."""
    return {f"{s}.{k}": v for s, sec in cfg.items() if isinstance(sec, dict) for k, v in sec.items()}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ: key -> (old, new)."""
    a, b = flat_config(old), flat_config(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def resume_config(ckpt: dict[str, Any], path: Path, overrides: Sequence[str] = (), config: Optional[Config] = None,
                  hdf5: Any = None) -> Config:
    """The config to continue with: the checkpoint's run config (or ``config``) plus overrides.

    The checkpoint's ``data.cache_dir`` is not used (the default cache, or the caller's):
    a path read from a checkpoint never decides where files are written outside its run.
    Raises ``ConfigError`` listing every changed key that a resume may not change.
    """
    saved_raw = ckpt["config"].get("run_config")
    if not isinstance(saved_raw, dict) or not saved_raw:
        raise ConfigError(f"{path}: expected the run config in the checkpoint, but it has none; "
                          f"fine-tune with --init-from instead")
    saved = validate(saved_raw, source=f"{path}: run_config")
    base = config.to_dict() if config is not None else _without_cache_dir(saved.to_dict())
    cfg = validate(apply_overrides(base, list(overrides)), source="resume config")
    if hdf5 is not None:
        cfg.data.hdf5_path = hdf5
    changed = config_changes(saved.to_dict(), cfg.to_dict())
    refused = {k: v for k, v in changed.items() if k not in ALLOWED_RESUME_CHANGES}
    if refused:
        listed = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in refused.items())
        raise ConfigError(f"{path}: expected the run's own settings when resuming, but got changes to {listed}; "
                          f"start a new run or fine-tune with --init-from (a resume may change only "
                          f"{', '.join(ALLOWED_RESUME_CHANGES)})")
    return cfg


def _without_cache_dir(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "data": {**cfg.get("data", {}), "cache_dir": None}}


def check_same_data(ckpt: dict[str, Any], path: Path, table: RolloutTable, data: HDF5DataModule) -> None:
    """Refuse to resume on rows other than those the run was trained on."""
    saved = ckpt["config"].get("data_summary") or {}
    now = {"rows": len(table), "train_rows": len(data.train), "val_rows": len(data.val)}
    if "sha256" in saved:
        now["sha256"] = data_fingerprint(table)
    diffs = [f"{k} {_short(saved[k])} -> {_short(v)}" for k, v in now.items() if k in saved and saved[k] != v]
    if diffs:
        raise DataError(f"{path}: expected the rows the run was trained on, but the data changed "
                        f"({', '.join(diffs)}); start a new run or fine-tune with --init-from")


def _short(value: Any) -> str:
    return value[:12] if isinstance(value, str) else str(value)


def reopen_log(folder: RunFolder, ckpt: dict[str, Any], path: Path) -> SimpleLogger:
    """The run's metrics log, without rows after the checkpoint's epoch (those epochs run again).

    The log's name comes from the checkpoint, so it must be a plain file name inside
    ``logs/``: a crafted ``../../x`` is refused rather than written to.
    """
    name = ckpt["trainer_state"].get("log_file")
    named = folder.inside(folder.logs, name, f"{path}: trainer_state.log_file") if name is not None else None
    log = named if named is not None and named.is_file() else find_log(folder.root)
    logger = None
    if log is not None:
        try:
            logger = SimpleLogger(folder.logs, resume_from=log)
        except (ValueError, OSError) as exc:
            warnings.warn(f"{log}: could not reopen the metrics log ({exc}); starting a new one", stacklevel=2)
    if logger is None:
        logger = SimpleLogger(folder.logs)
    logger.truncate_after(int(ckpt["epoch"]))
    logger.flush()
    return logger


def adopt_init_settings(cfg: Config, model_cfg: dict[str, Any], path: Path) -> None:
    """Take architecture and labels from the ``--init-from`` checkpoint into ``cfg``.

    A key the user set explicitly to another value is an error (the weights would not
    fit); keys left at their defaults take the checkpoint's value.
    """
    wanted = {("model", "layers"): list(model_cfg["layers"]), ("model", "residual"): bool(model_cfg["residual"]),
              ("model", "activation"): model_cfg["activation"], ("data", "in_lbl"): list(model_cfg["in_lbl"]),
              ("data", "out_lbl"): list(model_cfg["out_lbl"])}
    conflicts = []
    for (sec, key), value in wanted.items():
        section = getattr(cfg, sec)
        if key in section.model_fields_set and getattr(section, key) != value:
            conflicts.append(f"{sec}.{key}={getattr(section, key)!r} (checkpoint: {value!r})")
        else:
            setattr(section, key, value)
    if conflicts:
        raise ConfigError(f"--init-from {path}: expected the checkpoint's architecture and labels, but the config "
                          f"sets {', '.join(conflicts)}; drop these keys to use the checkpoint's")


def last_logged(logger: SimpleLogger) -> dict[str, float]:
    """The metrics of the newest log row (for a resume with nothing left to train)."""
    if not logger.rows:
        return {}
    return {k: v for k, v in logger.rows[-1].items() if k not in ("step", "timestamp")}

