"""A finished sweep's outputs: results table, best config, importance, plot.

Trials are ranked by the metric they reported last (the state of their run folder's
newest checkpoint), completed trials before trials that ASHA stopped early, then failed
ones. The best config is the base config with the best completed trial's values: the
sweep-only settings of the trials (checkpoint at every log period, no progress bar) are
not in it.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..config import Config, save_config, validate
from ..io import atomic_write_json, atomic_write_text, atomic_write_with
from .space import SearchSpace, with_values

STATUS_ORDER = {"completed": 0, "stopped early": 1, "failed": 2}


def collect_rows(grid, space: SearchSpace, metric: str, mode: str, max_epochs: int) -> list[dict[str, Any]]:
    """One dict per trial (trial, metric, status, epochs, run_dir, swept values), best first."""
    rows = []
    for r in grid:
        m = r.metrics or {}
        epochs = int(m.get("epoch", 0))
        status = "failed" if r.error is not None else "completed" if epochs >= max_epochs else "stopped early"
        value = float(m.get(metric, math.nan))
        name = Path(r.path).name
        rows.append({"trial": name, metric: value, "status": status, "epochs": epochs,
                     **space.decode(r.config), "run_dir": name})
    sign = 1.0 if mode == "min" else -1.0
    rows.sort(key=lambda row: (STATUS_ORDER[row["status"]], not math.isfinite(row[metric]),
                               sign * row[metric] if math.isfinite(row[metric]) else 0.0, row["trial"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def columns(rows: Sequence[dict[str, Any]], space: SearchSpace, metric: str) -> list[str]:
    return ["rank", "trial", metric, "status", "epochs", *space.keys, "run_dir"]


def _cell(v: Any) -> str:
    """A CSV/console cell: numbers compact, lists as JSON."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def results_csv(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    """The results table as CSV text (lists as JSON, so the file reads back unambiguously)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in rows:
        w.writerow([json.dumps(row[c]) if isinstance(row[c], (list, dict)) else row[c] for c in cols])
    return buf.getvalue()


def console_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    """A fixed-width text table of the rows (run_dir left out: it equals the trial name)."""
    cols = [c for c in cols if c != "run_dir"]
    cells = [[_cell(row[c]) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = lambda items: "  ".join(s.ljust(w) for s, w in zip(items, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def best_config(cfg: Config, rows: Sequence[dict[str, Any]], space: SearchSpace) -> Optional[Config]:
    """The base config with the best completed (else best stopped) trial's values."""
    ok = [r for r in rows if r["status"] != "failed"]
    if not ok:
        return None
    return validate(with_values(cfg.to_dict(), {k: ok[0][k] for k in space.keys}), source="best config")


# ---- importance and plot -----------------------------------------------------------------
def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), for Spearman's correlation."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), float)
    ranks[order] = np.arange(len(v), dtype=float)
    for u in np.unique(v):
        tie = v == u
        ranks[tie] = ranks[tie].mean()
    return ranks


def _numeric(p, values: list[Any]) -> Optional[np.ndarray]:
    """The values as numbers (log10 for loguniform), or None for categorical values."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    x = np.asarray(values, float)
    return np.log10(x) if p.kind == "loguniform" else x


def importance(rows: Sequence[dict[str, Any]], space: SearchSpace, metric: str) -> dict[str, float]:
    """Per key, in [0, 1]: |Spearman rho| of value vs metric for numbers, the correlation ratio
    (share of the metric's variance explained by the group means) for categories. 0 with < 3 trials."""
    used = [r for r in rows if math.isfinite(r[metric])]
    y = np.asarray([r[metric] for r in used], float)
    out = {}
    for p in space.params:
        vals = [r[p.key] for r in used]
        x = _numeric(p, vals)
        if len(used) < 3 or np.ptp(y) == 0:
            out[p.key] = 0.0
        elif x is not None:
            rx, ry = _ranks(x), _ranks(y)
            ok = np.std(rx) > 0 and np.std(ry) > 0
            out[p.key] = float(abs(np.corrcoef(rx, ry)[0, 1])) if ok else 0.0
        else:
            out[p.key] = _correlation_ratio([json.dumps(v) for v in vals], y)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _correlation_ratio(labels: list[str], y: np.ndarray) -> float:
    """eta = sqrt(between-group sum of squares / total sum of squares), in [0, 1]."""
    groups: dict[str, list[float]] = {}
    for label, v in zip(labels, y):
        groups.setdefault(label, []).append(float(v))
    between = sum(len(g) * (np.mean(g) - y.mean()) ** 2 for g in groups.values())
    return float(math.sqrt(between / np.sum((y - y.mean()) ** 2)))


def plot_sweep(rows: Sequence[dict[str, Any]], space: SearchSpace, metric: str, imp: dict[str, float],
               path: Path, top: int = 3) -> Optional[Path]:
    """Metric vs the ``top`` most important keys, one panel each; best trial in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = [r for r in rows if math.isfinite(r[metric])]
    keys = list(imp)[:top]
    if not used or not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        _panel(ax, used, space, key, metric)
        ax.set_title(f"{key} (importance {imp[key]:.2f})", fontsize=9)
    fig.tight_layout()
    atomic_write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path


def _panel(ax, used, space: SearchSpace, key: str, metric: str) -> None:
    p = next(q for q in space.params if q.key == key)
    vals = [r[key] for r in used]
    y = np.asarray([r[metric] for r in used], float)
    if _numeric(p, vals) is None:
        labels = sorted({json.dumps(v) for v in vals})
        xs = np.asarray([labels.index(json.dumps(v)) for v in vals], float)
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    else:
        xs = np.asarray(vals, float)
        if p.kind == "loguniform":
            ax.set_xscale("log")
    done = np.array([r["status"] == "completed" for r in used])
    ax.scatter(xs[done], y[done], s=22, label="completed")
    ax.scatter(xs[~done], y[~done], s=22, facecolors="none", edgecolors="gray", label="stopped early")
    ax.scatter(xs[:1], y[:1], s=60, color="red", marker="*", label="best", zorder=3)
    if np.all(y > 0):
        ax.set_yscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)


# ---- all outputs --------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a finished sweep produced; ``rows`` are sorted best first."""

    output: Path
    rows: list[dict[str, Any]]
    best_config: Optional[Path]
    results_csv: Path
    plot: Optional[Path]
    importance: dict[str, float] = field(default_factory=dict)


def write_outputs(grid, cfg: Config, space: SearchSpace, output: Path, settings):
    """results.csv, console table, best_config.yaml, sweep_plot.png and sweep.json."""
    metric = settings.metric
    rows = collect_rows(grid, space, metric, settings.mode, cfg.trainer.max_epochs)
    cols = columns(rows, space, metric)
    csv_path = output / "results.csv"
    atomic_write_text(csv_path, results_csv(rows, cols))
    print(console_table(rows, cols))
    best = best_config(cfg, rows, space)
    best_path = output / "best_config.yaml" if best is not None else None
    if best is not None:
        save_config(best, best_path)
    imp = importance(rows, space, metric)
    plot = plot_sweep(rows, space, metric, imp, output / "sweep_plot.png")
    summary = {"metric": metric, "mode": settings.mode, "trials": len(rows),
               "completed": sum(r["status"] == "completed" for r in rows),
               "best_trial": rows[0]["trial"] if rows else None, "importance": imp, "notes": list(space.notes),
               "space": {p.key: {p.kind: list(p.values)} for p in space.params}}
    atomic_write_json(output / "sweep.json", summary)
    return SweepResult(output, rows, best_path, csv_path, plot, imp)
