"""``SimpleLogger``: metrics as plain JSON rows, hyperparameters as one JSON object.

Files: ``<log_dir>/regression_hdf5_<timestamp>.json`` (a JSON list of rows, each with
``step``, ``timestamp`` and metric names such as ``loss/train``) and
``..._hparams.json``. The list is rewritten atomically at each ``flush``, so the file on
disk is always complete JSON. A resumed run reopens its log and appends to it.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Optional

from ..io import atomic_write_json

PREFIX = "regression_hdf5"


class SimpleLogger:
    """Collect metric rows in memory and write them as one JSON list."""

    def __init__(self, log_dir: str | Path, resume_from: Optional[str | Path] = None):
        self.log_dir = Path(log_dir)
        if resume_from is not None:
            self.path = Path(resume_from)
            self.rows: list[dict[str, Any]] = json.loads(self.path.read_text())
        else:
            self.path = self.log_dir / f"{PREFIX}_{_dt.datetime.now().strftime('%Y%m%d_%H%M%S')}.json"
            self.rows = []
        self.hparams_path = self.path.with_name(self.path.stem + "_hparams.json")

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """Write the hyperparameters (the run's config, plus ``resolved`` once known) next to
        the metrics log."""
        extra = {"resolved": self._resolved} if getattr(self, "_resolved", None) is not None else {}
        atomic_write_json(self.hparams_path, {**params, **extra})

    def log_resolved(self, resolved: dict[str, Any]) -> None:
        """Record what ``auto`` resolved (device, engine, threads, torch version) under
        ``resolved`` in the hyperparameters file (now if it exists, else when it is written)."""
        self._resolved = resolved
        if self.hparams_path.is_file():
            self.log_hyperparams(json.loads(self.hparams_path.read_text()))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Append one row; call ``flush`` to write it."""
        row = {"step": int(step), "timestamp": _dt.datetime.now().isoformat()}
        row.update({k: float(v) for k, v in metrics.items()})
        self.rows.append(row)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run replays those epochs)."""
        self.rows = [r for r in self.rows if r["step"] <= step]

    def flush(self) -> None:
        """Write all rows atomically."""
        atomic_write_json(self.path, self.rows)


def find_log(run_dir: str | Path) -> Optional[Path]:
    """The newest metrics log of a run folder (original or rollfit), or None."""
    logs = sorted(p for p in (Path(run_dir) / "logs").glob(f"{PREFIX}_*.json") if not p.name.endswith("_hparams.json"))
    return logs[-1] if logs else None


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a metrics log."""
    return json.loads(Path(path).read_text())
