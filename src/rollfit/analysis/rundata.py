"""Where a trained run's data lives: its recorded data section and files.

Shared by ``evaluate`` (the run's rows) and ``suggest`` (the run's campaign); it imports no
``Surrogate``, so both can use it without an import cycle (``Surrogate.suggest`` imports
``suggest``, and ``evaluate`` imports ``Surrogate``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, DataFileNotFound


def run_data_section(config: dict[str, Any]) -> dict[str, Any]:
    """The data section a run was trained with (``run_config.data``; empty if unknown)."""
    return dict((config.get("run_config") or {}).get("data") or {})


def recorded_data_path(config: dict[str, Any], checkpoint: Any, hdf5: Any = None) -> Any:
    """``hdf5`` when given, else the run's ``data.hdf5_path``; an error naming --hdf5 when it has none."""
    path = hdf5 if hdf5 is not None else run_data_section(config).get("hdf5_path")
    if path is None:
        raise ConfigError(f"{checkpoint}: expected data.hdf5_path in the run's config, "
                          "but it has none; pass --hdf5 PATH")
    return path


def resolve_data_path(path: Any, run_dir: Optional[Path]) -> Any:
    """A recorded relative data path (or list of them) as training read it: from the current
    folder when it exists there, else relative to the run folder when it exists there, else
    as given (``check_data_exists`` then names it)."""
    if isinstance(path, (list, tuple)):
        return [resolve_data_path(p, run_dir) for p in path]
    p = Path(str(path)).expanduser()
    if p.is_absolute() or p.exists() or run_dir is None or not (run_dir / p).exists():
        return str(p)
    return str(run_dir / p)


def check_data_exists(path: Any, run_dir: Optional[Path]) -> None:
    """A run whose data files moved: say which config key named them and how to go on."""
    for p in path if isinstance(path, list) else [path]:
        if not any(ch in str(p) for ch in "*?[") and not Path(p).exists():
            raise DataFileNotFound(f"{p}: expected the run's data (data.hdf5_path of the run "
                                   f"{run_dir}), but it does not exist; pass --hdf5 PATH")
