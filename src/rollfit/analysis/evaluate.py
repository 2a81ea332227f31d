"""Honest accuracy numbers for a trained surrogate, in original units.

``evaluate_run`` rebuilds the run's own train/validation split from the checkpoint
(``config['split']`` and the data section of ``config['run_config']``) and scores the
validation rows; with ``train_split: 1.0`` those rows were trained on, and the result says
so (``Evaluation.training_metrics``). Cross-validation is the honest alternative then:
``pipeline.cv.cross_validate`` retrains the run's config on K-1 folds and predicts the held
out fold; its folds, config and metrics (``CrossValidation``) are defined here.

Metrics per output label: ``rmse``, ``mae``, ``r2``, ``max_abs_error`` and ``n`` (rows);
for model kinds with an uncertainty also ``nll`` (Gaussian negative log likelihood of the
true values, mean per row) and ``coverage_95`` (fraction of rows inside mean +- 1.96 std).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ..data.datamodule import split_indices
from ..data.table import RolloutTable
from ..errors import ConfigError, DataError, OutputError
from ..io import atomic_write_json
from ..runs.folder import RunFolder
from .rundata import check_data_exists, recorded_data_path, resolve_data_path, run_data_section
from .surrogate import Surrogate

METRICS = ("rmse", "mae", "r2", "max_abs_error", "n")
UNCERTAINTY_METRICS = ("nll", "coverage_95")  # kinds with an uncertainty only
Z95 = NormalDist().inv_cdf(0.975)  # the standard normal's 97.5% quantile: mean +- Z95 std is a 95% interval


# ----------------------------------------------------------------------------- metrics
def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per output label: rmse, mae, r2, max_abs_error and n, computed in float64.

    ``r2`` is 1 - SS_res / SS_tot; it is NaN when the true values do not vary (SS_tot = 0),
    where no fraction of variance can be explained.
    """
    yt = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    yp = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    if yt.shape != yp.shape or yt.shape[1] != len(labels):
        raise ValueError(f"regression_metrics: expected y_true and y_pred of shape (N, {len(labels)}), "
                         f"but got {yt.shape} and {yp.shape}")
    out: dict[str, dict[str, float]] = {}
    for k, label in enumerate(labels):
        err = yp[:, k] - yt[:, k]
        n = len(err)
        ss_tot = float(((yt[:, k] - yt[:, k].mean()) ** 2).sum()) if n else 0.0
        out[label] = {
            "rmse": float(np.sqrt(np.mean(err ** 2))) if n else float("nan"),
            "mae": float(np.mean(np.abs(err))) if n else float("nan"),
            "r2": 1.0 - float((err ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan"),
            "max_abs_error": float(np.max(np.abs(err))) if n else float("nan"),
            "n": int(n),
        }
    return out


def uncertainty_metrics(y_true: np.ndarray, mean: np.ndarray, std: np.ndarray,
                        labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per output label: ``nll`` and ``coverage_95`` of a predictive normal N(mean, std^2).

    ``nll`` = mean over rows of ``0.5 log(2 pi std^2) + (y - mean)^2 / (2 std^2)`` (lower is
    better; in the output's units, so compare it between models of the same data only);
    ``coverage_95`` = fraction of rows with ``|y - mean| <= Z95 std``, near 0.95 for an honest
    uncertainty. Computed in float64; a zero std gives an infinite NLL (an overconfident model).
    """
    yt = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    mu = np.asarray(mean, dtype=np.float64).reshape(len(mean), -1)
    sd = np.asarray(std, dtype=np.float64).reshape(len(std), -1)
    if not (yt.shape == mu.shape == sd.shape) or yt.shape[1] != len(labels):
        raise ValueError(f"uncertainty_metrics: expected y_true, mean and std of shape (N, {len(labels)}), "
                         f"but got {yt.shape}, {mu.shape} and {sd.shape}")
    out: dict[str, dict[str, float]] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        nll = 0.5 * np.log(2.0 * np.pi * sd ** 2) + (yt - mu) ** 2 / (2.0 * sd ** 2)
        inside = np.abs(yt - mu) <= Z95 * sd
    for k, label in enumerate(labels):
        n = len(yt)
        out[label] = {"nll": float(nll[:, k].mean()) if n else float("nan"),
                      "coverage_95": float(inside[:, k].mean()) if n else float("nan")}
    return out


def scored_metrics(y_true: np.ndarray, mean: np.ndarray, std: Optional[np.ndarray],
                   labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """``regression_metrics``, plus ``uncertainty_metrics`` when there is a ``std``."""
    metrics = regression_metrics(y_true, mean, labels)
    if std is not None:
        for lbl, extra in uncertainty_metrics(y_true, mean, std, labels).items():
            metrics[lbl].update(extra)
    return metrics


def metric_names(metrics: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The metrics to show for ``metrics`` (label -> values): ``METRICS``, then the
    uncertainty metrics when every output has them."""
    extra = tuple(m for m in UNCERTAINTY_METRICS if metrics and all(m in v for v in metrics.values()))
    return METRICS + extra


# ----------------------------------------------------------------------------- the run's data
def run_split(config: dict[str, Any]) -> tuple[float, int]:
    """(train_split, split_seed) of a run: the checkpoint's record, else its config, else 1.0/0."""
    split = config.get("split") or {}
    data = run_data_section(config)
    return (float(split.get("train_split", data.get("train_split", 1.0))),
            int(split.get("split_seed", data.get("split_seed", 0))))


def load_run_table(surrogate: Surrogate, hdf5: Any = None) -> RolloutTable:
    """The rows a run trained on (its config's data files), or those of ``hdf5``.

    Labels, aliases and missing/non-finite policies are the run's, so the same rows come back.
    """
    from ..data.reader import load_rollouts

    data, cfg = run_data_section(surrogate.config), surrogate.config
    path = recorded_data_path(cfg, surrogate.checkpoint, hdf5)
    if hdf5 is None:
        path = resolve_data_path(path, surrogate.run_dir)
        check_data_exists(path, surrogate.run_dir)
    return load_rollouts(path, surrogate.in_lbl, surrogate.out_lbl,
                         aliases=data.get("aliases") or cfg.get("aliases") or {},
                         on_missing=data.get("on_missing", "error"), on_nonfinite=data.get("on_nonfinite", "error"),
                         cache=bool(data.get("cache", True)), cache_dir=data.get("cache_dir"))


def split_rows(surrogate: Surrogate, table: RolloutTable) -> tuple[np.ndarray, np.ndarray]:
    """The run's (train, val) row indices of ``table``, rebuilt as training made them.

    The split is a seeded permutation of the row count, so it is only the same when the data
    has as many rows as at training time; otherwise the validation rows cannot be rebuilt.
    """
    summary = surrogate.config.get("data_summary") or {}
    rows = summary.get("rows")
    if rows is not None and int(rows) != len(table):
        raise DataError(f"{', '.join(table.files) or 'data'}: expected the {rows} rows the run trained on, "
                        f"but got {len(table)} rows; the validation rows cannot be rebuilt; "
                        "evaluate on a file with --hdf5 PATH")
    train_split, seed = run_split(surrogate.config)
    return split_indices(len(table), train_split, seed)


# ----------------------------------------------------------------------------- evaluation
@dataclass
class Evaluation:
    """Predictions and metrics of a run on a set of rows.

    ``rows`` is ``"validation"`` (the run's held-out rows), ``"training"`` (train_split 1.0:
    validation rows are training rows) or ``"file"`` (every row of another file); ``tag``
    names the metrics file (``metrics_<tag>.json``: validation, training or the file's stem).
    ``y_std`` is the predicted standard deviation (kinds with an uncertainty), else None.
    """

    metrics: dict[str, dict[str, float]]
    rows: str
    source: str
    inputs: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    out_lbl: list[str]
    train_split: float
    tag: str = ""
    y_std: Optional[np.ndarray] = None

    @property
    def file_tag(self) -> str:
        """What the metrics file is named for: ``validation``, ``training`` or the data file."""
        return self.tag or self.rows

    @property
    def training_metrics(self) -> bool:
        """True when the scored rows were also used for training (not an accuracy estimate)."""
        return self.rows == "training"

    def describe(self) -> str:
        """What the metrics were computed on, in words."""
        n = len(self.y_true)
        if self.rows == "validation":
            return f"{n} validation rows (train_split {self.train_split:g}) of {self.source}"
        if self.rows == "training":
            return f"{n} training rows (train_split 1.0) of {self.source}"
        return f"{n} rows of {self.source}"

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``metrics_<tag>.json`` content: per output label the metrics and what they were computed on."""
        return {lbl: {**m, "evaluated_on": self.rows, "source": self.source} for lbl, m in self.metrics.items()}


def evaluate_run(run: str | Path | Surrogate, hdf5: Any = None, table: Optional[RolloutTable] = None) -> Evaluation:
    """Score a run on its validation rows, or on every row of ``hdf5`` (another file); a
    model with an uncertainty is also scored by ``uncertainty_metrics`` on the same rows.

    ``table`` supplies the run's rows already in memory (training passes it); it is split
    like the data files would be.
    """
    s = run if isinstance(run, Surrogate) else Surrogate.load(run)
    train_split, _ = run_split(s.config)
    if hdf5 is not None:
        t = load_run_table(s, hdf5)
        idx, kind = np.arange(len(t)), "file"
    else:
        t = table if table is not None else load_run_table(s)
        _, idx = split_rows(s, t)
        kind = "training" if train_split >= 1.0 else "validation"
    x, y = t.inputs[idx], t.targets[idx]
    pred, std = s.predict(x, return_std=True) if s.has_std else (s.predict(x), None)
    metrics = scored_metrics(y, pred, std, s.out_lbl)
    source = ", ".join(Path(f).name for f in t.files) or "the run's data"
    tag = file_tag(t.files) if kind == "file" else kind
    return Evaluation(metrics, kind, source, x, y, pred, list(s.out_lbl), train_split, tag, std)


def file_tag(files: Sequence[str]) -> str:
    """The name part of ``metrics_<tag>.json`` for rows of other files: the first file's stem
    (``+N`` more files), never one of the run's own names (validation, training, cv)."""
    stem = Path(files[0]).stem if files else "file"
    tag = stem + (f"+{len(files) - 1}" if len(files) > 1 else "")
    return f"file_{tag}" if tag in ("validation", "training", "cv") else tag


def _folder(run: str | Path | RunFolder) -> RunFolder:
    return run if isinstance(run, RunFolder) else RunFolder(run)


def write_metrics(run: str | Path | RunFolder, evaluation: Evaluation) -> Path:
    """Write ``metrics_<tag>.json`` (named for the rows scored) atomically; returns its path.
    Another evaluation (validation vs a file) writes another file, never over this one."""
    path = _folder(run).metrics(evaluation.file_tag)
    atomic_write_json(path, json_safe(evaluation.to_json()))
    return path


def save_or_warn(write: Callable[[], Path]) -> Optional[Path]:
    """Run a writer whose results were already shown; when the run folder cannot be written
    (read-only), warn with the way out (``--output DIR``) and return None instead of failing."""
    try:
        return write()
    except OutputError as exc:
        warnings.warn(f"{exc}; the results are printed but not saved; pass --output DIR to save them",
                      UserWarning, stacklevel=2)
        return None


def json_safe(obj: Any) -> Any:
    """NaN/inf become null (strict JSON readers reject NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# ----------------------------------------------------------------------------- cross-validation
def fold_assignment(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Fold (0..k-1) of each of ``n`` rows: a seeded shuffle dealt round-robin (sizes differ by <= 1)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= n:
        raise ConfigError(f"--cv: expected K between 2 and the number of rows ({n}), but got {k!r}")
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return folds


@dataclass
class CrossValidation:
    """Out-of-fold predictions of K retrained models and the metrics of each fold;
    ``y_std``: the out-of-fold predictive std of a model kind with an uncertainty (its
    ``nll`` and ``coverage_95`` are then scored too)."""

    k: int
    out_lbl: list[str]
    fold: np.ndarray
    inputs: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    fold_metrics: list[dict[str, dict[str, float]]] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    y_std: Optional[np.ndarray] = None

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per label and metric: ``mean`` and ``std`` (sample std, ddof=1) over the K folds."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        names = metric_names(self.fold_metrics[0]) if self.fold_metrics else METRICS
        for lbl in self.out_lbl:
            out[lbl] = {}
            for m in names:
                v = np.array([f[lbl][m] for f in self.fold_metrics], dtype=np.float64)
                out[lbl][m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
        return out

    def pooled(self) -> dict[str, dict[str, float]]:
        """Metrics of all out-of-fold predictions together (each row predicted once)."""
        return scored_metrics(self.y_true, self.y_pred, self.y_std, self.out_lbl)

    def to_json(self) -> dict[str, Any]:
        """``metrics_cv.json`` content."""
        per = {lbl: {m: {**s, "folds": [f[lbl][m] for f in self.fold_metrics]} for m, s in ms.items()}
               for lbl, ms in self.summary().items()}
        return {"k": self.k, "overrides": list(self.overrides), "per_output": per, "pooled": self.pooled()}


def fold_config(surrogate: Surrogate, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The run's config (validated, as a dict) for retraining one fold, quietly and without a report."""
    from ..config import apply_overrides, validate

    raw = apply_overrides(dict(surrogate.config.get("run_config") or {}), list(overrides))
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    raw.setdefault("data", {}).update(in_lbl=list(surrogate.in_lbl), out_lbl=list(surrogate.out_lbl))
    raw.setdefault("trainer", {}).update(progress=False, report=False)
    return validate(raw, source="run config").to_dict()


def write_cv(run: str | Path | RunFolder, cv: CrossValidation) -> Path:
    """Write ``metrics_cv.json`` into the run's output folder (atomically) and return its path."""
    path = _folder(run).metrics("cv")
    atomic_write_json(path, json_safe(cv.to_json()))
    return path
