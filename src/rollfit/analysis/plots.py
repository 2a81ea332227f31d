"""What a trained run learned, as pictures: plot data by pure functions, drawing separately.

Each ``*_data`` function returns plain dicts of numpy arrays and strings (testable without
images); each ``draw_*`` function turns that into a matplotlib ``Figure`` (Agg canvas,
matplotlib imported inside the function) and returns it. ``make_plots`` writes the PNGs of
a run folder into ``<run>/plots/``:

- ``loss.png``: every logged loss component on a log scale, the learning rate on a second axis;
- ``parity.png``: predicted vs true per output on the evaluated rows;
- ``residuals.png``: histogram of predicted - true per output;
- ``contour_<a>_<b>.png``: the predicted surface over the training range of inputs a and b,
  other inputs held fixed (default: their training median), training points and failed runs on it;
  for a model with an uncertainty, a map of the predicted standard deviation beside each mean map;
- ``slice_<name>.png``: the prediction along one input, other inputs held, with the data; for a
  model with an uncertainty, the 95% band (mean +- 1.96 std) around the line.
"""
from __future__ import annotations

import hashlib
import math
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import ConfigError, did_you_mean, listing
from ..io import atomic_write_with
from .surrogate import Surrogate

SKIP_KEYS = ("step", "timestamp", "epoch")
# Scatter plots show at most this many points (a seeded sample): a million dots draw slowly
# and show nothing more than a few thousand do. Metrics always use every row.
MAX_POINTS = 5000
# Failed runs are searched among at most this many groups (evenly spread) per call.
MAX_SCANNED_GROUPS = 50_000


def sample_rows(n: int, max_points: Optional[int] = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` rows (all rows when few enough)."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


# ----------------------------------------------------------------------------- loss curves
def loss_curve_data(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per logged metric its (step, value) series, from the rows of a metrics log.

    Works for rollfit logs (one row per step with every metric) and the original's (separate
    rows for ``loss/val`` and ``loss/train``): series are collected per metric name. ``lr``
    is kept apart (second axis). Points a log scale cannot show (<= 0 or non-finite) are
    dropped and counted in ``dropped``.
    """
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        for name, value in row.items():
            if name in SKIP_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps, values = series.setdefault(name, ([], []))
            steps.append(int(row.get("step", row.get("epoch", len(steps)))))
            values.append(float(value))
    out: dict[str, Any] = {"losses": {}, "lr": None, "dropped": {}}
    for name, (steps, values) in series.items():
        s, v = np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)
        keep = np.isfinite(v) & (v > 0)
        if (~keep).any():
            out["dropped"][name] = int((~keep).sum())
        entry = {"step": s[keep], "value": v[keep]}
        if name == "lr":
            out["lr"] = entry
        elif keep.any():
            out["losses"][name] = entry
    return out


def run_log_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of the run's newest metrics log (empty when the run has none)."""
    from ..training.logger import find_log, read_rows

    log = find_log(run_dir)
    return read_rows(log) if log is not None else []


# ----------------------------------------------------------------------------- parity / residuals
def parity_data(y_true: np.ndarray, y_pred: np.ndarray, out_lbl: Sequence[str], rows: str = "",
                max_points: Optional[int] = MAX_POINTS) -> dict[str, Any]:
    """Per output: true and predicted values (a sample of ``max_points`` rows when there are
    more), a common axis range, and R^2 and RMSE of all rows."""
    from .evaluate import regression_metrics

    yt, yp = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    metrics = regression_metrics(yt, yp, out_lbl)
    keep = sample_rows(len(yt), max_points)
    if len(keep) < len(yt):
        rows = f"{rows} ({len(keep)} of {len(yt)} shown)".strip()
    yt, yp = yt[keep], yp[keep]
    out: dict[str, Any] = {"rows": rows, "outputs": {}}
    for k, lbl in enumerate(out_lbl):
        both = np.concatenate([yt[:, k], yp[:, k]])
        lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        pad = 0.03 * (hi - lo or 1.0)
        out["outputs"][lbl] = {"true": yt[:, k], "pred": yp[:, k], "range": (lo - pad, hi + pad),
                               "r2": metrics[lbl]["r2"], "rmse": metrics[lbl]["rmse"]}
    return out


def residual_data(y_true: np.ndarray, y_pred: np.ndarray, out_lbl: Sequence[str], bins: int = 30,
                  rows: str = "") -> dict[str, Any]:
    """Per output: residuals (predicted - true) and their histogram (counts, bin edges)."""
    yt, yp = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    out: dict[str, Any] = {"rows": rows, "outputs": {}}
    for k, lbl in enumerate(out_lbl):
        r = yp[:, k] - yt[:, k]
        counts, edges = np.histogram(r, bins=max(1, min(bins, len(r) or 1)))
        out["outputs"][lbl] = {"residuals": r, "counts": counts, "edges": edges,
                               "mean": float(r.mean()) if r.size else math.nan,
                               "std": float(r.std()) if r.size else math.nan}
    return out


# ----------------------------------------------------------------------------- held inputs
def check_input_name(name: str, in_lbl: Sequence[str], where: str) -> str:
    """``name`` if it is an input label, else a ConfigError naming the inputs."""
    if name not in in_lbl:
        raise ConfigError(f"{where}: expected an input label ({listing(list(in_lbl), name)}), "
                          f"but got '{name}'{did_you_mean(name, in_lbl)}")
    return name


def hold_values(surrogate: Surrogate, inputs: Optional[np.ndarray], hold: Optional[Mapping[str, float]] = None
                ) -> dict[str, float]:
    """Value of every input when it is not on a plot axis: ``hold`` if given, else the
    median of the training ``inputs``, else (no data) the middle of the training range."""
    hold = dict(hold or {})
    for name in hold:
        check_input_name(name, surrogate.in_lbl, "--hold")
    bounds = surrogate.bounds
    out = {}
    for j, lbl in enumerate(surrogate.in_lbl):
        if lbl in hold:
            out[lbl] = float(hold[lbl])
        elif inputs is not None and len(inputs):
            out[lbl] = float(np.median(inputs[:, j]))
        else:
            out[lbl] = 0.5 * (bounds[lbl][0] + bounds[lbl][1])
    return out


def _grid_inputs(surrogate: Surrogate, hold: Mapping[str, float], columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """(M, D) inputs: ``columns`` where given, the held value elsewhere."""
    m = len(next(iter(columns.values())))
    return np.stack([np.asarray(columns[lbl], np.float64) if lbl in columns else np.full(m, hold[lbl])
                     for lbl in surrogate.in_lbl], axis=1).astype(np.float32)


def _predict(surrogate: Surrogate, x: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(mean, std) for a model with an uncertainty, (mean, None) otherwise."""
    if surrogate.has_std:
        return surrogate.predict(x, return_std=True)
    return surrogate.predict(x), None


# ----------------------------------------------------------------------------- contour / slice
def contour_data(surrogate: Surrogate, pair: Sequence[str], hold: Mapping[str, float], n: int = 60,
                 points: Optional[np.ndarray] = None, val_points: Optional[np.ndarray] = None,
                 failed: Optional[np.ndarray] = None) -> dict[str, Any]:
    """The predicted surface over the training range of inputs ``pair`` = (a, b).

    Returns grids ``x`` (n,), ``y`` (n,), ``z`` {output: (n, n)} with ``z[i, j]`` at
    (x[j], y[i]); ``std`` {output: (n, n)} likewise for a model with an uncertainty (else
    None); the held values of the other inputs; and the (a, b) coordinates of the
    training ``points``, validation ``val_points`` and ``failed`` runs ((N, D) input arrays).
    """
    a, b = (check_input_name(p, surrogate.in_lbl, "--pairs") for p in pair)
    if a == b:
        raise ConfigError(f"--pairs: expected two different inputs, but got '{a},{b}'")
    ia, ib = surrogate.in_lbl.index(a), surrogate.in_lbl.index(b)
    bounds = surrogate.bounds
    x = np.linspace(*bounds[a], n)
    y = np.linspace(*bounds[b], n)
    gx, gy = np.meshgrid(x, y)
    pred, std = _predict(surrogate, _grid_inputs(surrogate, hold, {a: gx.ravel(), b: gy.ravel()}))
    z = {lbl: pred[:, k].reshape(n, n).astype(np.float64) for k, lbl in enumerate(surrogate.out_lbl)}
    sd = None if std is None else {lbl: std[:, k].reshape(n, n).astype(np.float64)
                                   for k, lbl in enumerate(surrogate.out_lbl)}

    def xy(arr: Optional[np.ndarray]) -> np.ndarray:
        return np.empty((0, 2)) if arr is None or not len(arr) else np.asarray(arr, np.float64)[:, [ia, ib]]

    held = {k: v for k, v in hold.items() if k not in (a, b)}
    return {"pair": (a, b), "x": x, "y": y, "z": z, "std": sd, "held": held, "points": xy(points),
            "val_points": xy(val_points), "failed": xy(failed)}


def slice_data(surrogate: Surrogate, name: str, hold: Mapping[str, float], n: int = 200,
               inputs: Optional[np.ndarray] = None, targets: Optional[np.ndarray] = None,
               near: float = 0.1) -> dict[str, Any]:
    """The prediction along input ``name`` over its training range, other inputs held.

    With data (``inputs``, ``targets``), each row's ``name`` value and outputs are returned,
    and ``near`` marks rows whose other inputs all lie within ``near`` x (their training
    range) of the held values: those are the rows the line should pass through. ``std``
    {output: (n,)} is the predicted standard deviation along the line (None for a model
    without an uncertainty).
    """
    check_input_name(name, surrogate.in_lbl, "--slice")
    j = surrogate.in_lbl.index(name)
    bounds = surrogate.bounds
    x = np.linspace(*bounds[name], n)
    pred, std = _predict(surrogate, _grid_inputs(surrogate, hold, {name: x}))
    out: dict[str, Any] = {"name": name, "x": x, "pred": {lbl: pred[:, k].astype(np.float64)
                                                          for k, lbl in enumerate(surrogate.out_lbl)},
                           "std": None if std is None else {lbl: std[:, k].astype(np.float64)
                                                            for k, lbl in enumerate(surrogate.out_lbl)},
                           "held": {k: v for k, v in hold.items() if k != name},
                           "data_x": np.empty(0), "data_y": {lbl: np.empty(0) for lbl in surrogate.out_lbl},
                           "near": np.empty(0, dtype=bool)}
    if inputs is not None and targets is not None and len(inputs):
        inputs = np.asarray(inputs, np.float64)
        width = np.array([bounds[lbl][1] - bounds[lbl][0] for lbl in surrogate.in_lbl])
        centre = np.array([hold[lbl] for lbl in surrogate.in_lbl])
        others = [i for i in range(len(surrogate.in_lbl)) if i != j]
        close = np.abs(inputs[:, others] - centre[others]) <= near * np.maximum(width[others], 1e-12)
        out["data_x"] = inputs[:, j]
        out["data_y"] = {lbl: np.asarray(targets, np.float64)[:, k] for k, lbl in enumerate(surrogate.out_lbl)}
        out["near"] = close.all(axis=1)
    return out


# ----------------------------------------------------------------------------- failed runs
def _succeeded(value: Any) -> bool:
    """A ``success`` attribute (bool, uint8, 1-element array, absent=None) as a bool."""
    if value is None:
        return True
    arr = np.asarray(value).reshape(-1)
    return bool(arr[0]) if arr.size else True


def failed_inputs(paths: Any, in_lbl: Sequence[str], max_groups: Optional[int] = MAX_SCANNED_GROUPS) -> np.ndarray:
    """Inputs (M, D) of the failed runs in rollout file(s), for marking them on plots.

    The reader skips failed groups, so they are read here with h5py: groups whose
    ``success`` is false and that still have a ``param_state`` (many failed runs have none;
    those are left out, there is nothing to mark). Campaigns with more than ``max_groups``
    groups are searched in an evenly spread subset of them (the marks are then a sample).
    """
    import h5py

    from ..data.labels import resolve_inputs
    from ..data.reader import expand_paths

    files = expand_paths(paths)
    budget = None if max_groups is None else max(1, max_groups // len(files))
    rows: list[np.ndarray] = []
    for path in files:
        with h5py.File(path, "r") as f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["parameter_names"][()]]
            cols = resolve_inputs(in_lbl, names, str(path))
            groups = [n for n in f if n.startswith("param_")]
            if budget is not None and len(groups) > budget:
                groups = groups[::math.ceil(len(groups) / budget)]
            for gname in groups:
                g = f[gname]
                if not isinstance(g, h5py.Group) or _succeeded(g.attrs.get("success")) or "param_state" not in g:
                    continue
                state = np.asarray(g["param_state"][()], np.float64).reshape(-1)
                if state.size == len(names):
                    rows.append(state[cols])
    return np.stack(rows) if rows else np.empty((0, len(in_lbl)))


SAFE_NAME_MAX = 80  # two of these in a contour's file name stay under the usual 255-byte limit


def safe_name(label: str) -> str:
    """A label as a file-name part (letters, digits, ``_.-``). A label that had to change (other
    characters, or longer than ``SAFE_NAME_MAX``) gains a hash of the whole label, so two
    labels never share a file name ('a b' and 'a-b' differ) and the name stays short."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "x"
    if name == label and len(name) <= SAFE_NAME_MAX:
        return name
    digest = hashlib.blake2b(label.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{name[:SAFE_NAME_MAX - 9]}-{digest}"


# ----------------------------------------------------------------------------- drawing
DPI = 100


def _figure(n_axes: int, width: float = 5.0, height: float = 4.2, max_cols: int = 3):
    """A Figure on an Agg canvas (no pyplot, no global state) with ``n_axes`` axes in a grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = max(1, min(n_axes, max_cols))
    rows = max(1, math.ceil(n_axes / cols))
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n_axes)]


def _held_text(held: Mapping[str, float], limit: int = 4) -> str:
    """``held: c=1, d=0.5 (+3 more)`` for titles; empty when nothing is held."""
    if not held:
        return ""
    items = [f"{k}={v:.4g}" for k, v in held.items()]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "held: " + ", ".join(items[:limit]) + more


def draw_loss_curves(data: Mapping[str, Any]):
    """Every loss series on a log y axis; the learning rate on a second (log) axis."""
    fig, (ax,) = _figure(1, 7.5, 4.5)
    for name, s in data["losses"].items():
        ax.plot(s["step"], s["value"], label=name, linewidth=1.3)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("training log")
    handles, labels = ax.get_legend_handles_labels()
    lr = data.get("lr")
    if lr is not None and len(lr["step"]):
        ax2 = ax.twinx()
        ax2.plot(lr["step"], lr["value"], color="black", linestyle="--", linewidth=1.0, label="lr")
        ax2.set_yscale("log")
        ax2.set_ylabel("learning rate")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no metrics logged", ha="center", va="center", transform=ax.transAxes)
    return fig


def draw_parity(data: Mapping[str, Any]):
    """Predicted vs true per output, with the y = x line and R^2/RMSE in the title."""
    outputs = data["outputs"]
    fig, axes = _figure(len(outputs), 4.6, 4.4)
    for ax, (lbl, d) in zip(axes, outputs.items()):
        lo, hi = d["range"]
        ax.scatter(d["true"], d["pred"], s=12, alpha=0.7, label="rows")
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=1.0, label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {lbl}")
        ax.set_ylabel(f"predicted {lbl}")
        ax.set_title(f"{lbl}: R² {d['r2']:.4g}, RMSE {d['rmse']:.4g}\n{data.get('rows', '')}", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    return fig


def draw_residuals(data: Mapping[str, Any]):
    """Histogram of predicted - true per output, with zero marked."""
    outputs = data["outputs"]
    fig, axes = _figure(len(outputs), 4.8, 3.8)
    for ax, (lbl, d) in zip(axes, outputs.items()):
        ax.stairs(d["counts"], d["edges"], fill=True, alpha=0.8)
        ax.axvline(0.0, color="black", linewidth=1.0)
        ax.set_xlabel(f"residual {lbl} (predicted - true)")
        ax.set_ylabel("rows")
        ax.set_title(f"mean {d['mean']:.3g}, std {d['std']:.3g}\n{data.get('rows', '')}", fontsize=9)
    return fig


def draw_contour(data: Mapping[str, Any]):
    """Filled contours of each output over the input pair, with training points and failed runs;
    with an uncertainty (``data["std"]``), each output's std map beside its mean map."""
    a, b = data["pair"]
    std = data.get("std")
    panels = [(lbl, z, False) for lbl, z in data["z"].items()]
    if std is not None:
        panels = [p for lbl, z, _ in panels for p in ((lbl, z, False), (lbl, std[lbl], True))]
    fig, axes = _figure(len(panels), 5.6, 4.6, max_cols=2 if std is not None else 3)
    for ax, (lbl, z, is_std) in zip(axes, panels):
        with warnings.catch_warnings():  # a flat surface has no levels to draw
            warnings.simplefilter("ignore", UserWarning)
            filled = ax.contourf(data["x"], data["y"], z, levels=20, cmap="magma" if is_std else "viridis")
        fig.colorbar(filled, ax=ax, label=f"predicted std of {lbl}" if is_std else f"predicted {lbl}")
        if len(data["points"]):
            ax.scatter(*data["points"].T, s=9, c="black" if not is_std else "white", label="training rows")
        if len(data["val_points"]):
            ax.scatter(*data["val_points"].T, s=16, facecolors="white", edgecolors="black", label="validation rows")
        if len(data["failed"]):
            ax.scatter(*data["failed"].T, s=28, c="red", marker="x", label="failed runs")
        ax.set_xlim(data["x"][0], data["x"][-1])
        ax.set_ylim(data["y"][0], data["y"][-1])
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        held = _held_text(data["held"])
        if is_std:
            ax.set_title(f"std of {lbl} (a new observation)" + (f"\n{held}" if held else ""), fontsize=9)
        else:
            ax.set_title(held or f"{lbl} over {a}, {b}", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    return fig


def draw_slice(data: Mapping[str, Any]):
    """The prediction along one input (line) with the data (rows near the held values darker);
    with an uncertainty (``data["std"]``), the 95% band mean +- 1.96 std around the line."""
    from .evaluate import Z95

    name = data["name"]
    fig, axes = _figure(len(data["pred"]), 5.2, 4.0)
    near = data["near"]
    std = data.get("std")
    for ax, (lbl, pred) in zip(axes, data["pred"].items()):
        y = data["data_y"][lbl]
        if len(y):
            ax.scatter(data["data_x"][~near], y[~near], s=8, c="0.7", label="other rows")
            ax.scatter(data["data_x"][near], y[near], s=12, c="black", label="rows near the held values")
        if std is not None:
            ax.fill_between(data["x"], pred - Z95 * std[lbl], pred + Z95 * std[lbl], color="tab:blue", alpha=0.2,
                            linewidth=0, label="95% interval (mean ± 1.96 std)")
        ax.plot(data["x"], pred, color="tab:blue", linewidth=2.0, label="prediction")
        ax.set_xlabel(name)
        ax.set_ylabel(lbl)
        ax.set_title(_held_text(data["held"]) or f"{lbl} along {name}", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Write a figure as PNG atomically (no software metadata, so no URL inside the file)."""
    atomic_write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": None}))
    return Path(path)


# ----------------------------------------------------------------------------- a run's plots
def default_pairs(in_lbl: Sequence[str]) -> list[tuple[str, str]]:
    """The first two inputs, when there are two."""
    return [(in_lbl[0], in_lbl[1])] if len(in_lbl) >= 2 else []


def _failed_or_empty(table, in_lbl: Sequence[str]) -> np.ndarray:
    """Failed runs' inputs, or none (with a warning) when the files cannot be read for them."""
    if not table.n_failed:
        return np.empty((0, len(in_lbl)))
    try:
        return failed_inputs(table.files, in_lbl)
    except Exception as exc:  # marking failures is a nicety; never lose the other plots over it
        warnings.warn(f"failed runs are not marked on the plots: {exc}", stacklevel=2)
        return np.empty((0, len(in_lbl)))


def make_plots(run: str | Path | Surrogate, pairs: Optional[Sequence[Sequence[str]]] = None,
               slices: Optional[Sequence[str]] = None, hold: Optional[Mapping[str, float]] = None,
               table=None, evaluation=None, output: Optional[str | Path] = None) -> dict[str, Path]:
    """Write a run's PNGs into its ``plots/`` (under ``output`` when given); returns plot name -> path.

    ``pairs``: input pairs for contour plots (default: the first two inputs); ``slices``:
    inputs for 1-D slices (default: the first input); ``hold``: values of the other inputs
    (default: training medians). ``table``/``evaluation`` reuse what the caller already has.
    The output folder is checked writable first: a read-only run folder fails naming
    ``--output`` before anything is drawn.
    """
    from .evaluate import evaluate_run, load_run_table, split_rows

    s = run if isinstance(run, Surrogate) else Surrogate.load(run)
    folder = s.folder if output is None else s.folder.with_output(output)
    folder.check_output()
    run_dir, out = folder.root, folder.plots
    pairs = [tuple(p) for p in pairs] if pairs else default_pairs(s.in_lbl)
    slices = list(slices) if slices else s.in_lbl[:1]
    for p in pairs:  # check every name before drawing anything
        contour_names = [check_input_name(n, s.in_lbl, "--pairs") for n in p]
        if len(contour_names) != 2 or contour_names[0] == contour_names[1]:
            raise ConfigError(f"--pairs: expected two different inputs, but got '{','.join(p)}'")
    for name in slices:
        check_input_name(name, s.in_lbl, "--slice")
    table = table if table is not None else load_run_table(s)
    ev = evaluation if evaluation is not None else evaluate_run(s, table=table)
    tr, va = split_rows(s, table)
    held = hold_values(s, table.inputs[tr], hold)
    rows_text = ev.describe()
    written = {"loss": save_figure(draw_loss_curves(loss_curve_data(run_log_rows(run_dir))), out / "loss.png"),
               "parity": save_figure(draw_parity(parity_data(ev.y_true, ev.y_pred, s.out_lbl, rows_text)),
                                     out / "parity.png"),
               "residuals": save_figure(draw_residuals(residual_data(ev.y_true, ev.y_pred, s.out_lbl, rows=rows_text)),
                                        out / "residuals.png")}
    failed = _failed_or_empty(table, s.in_lbl) if pairs else None
    same = np.array_equal(tr, va)
    tr_shown, va_shown = tr[sample_rows(len(tr))], va[sample_rows(len(va))]
    for a, b in pairs:
        data = contour_data(s, (a, b), held, points=table.inputs[tr_shown],
                            val_points=None if same else table.inputs[va_shown],
                            failed=None if failed is None else failed[sample_rows(len(failed))])
        path = out / f"contour_{safe_name(a)}_{safe_name(b)}.png"
        written[f"contour_{a}_{b}"] = save_figure(draw_contour(data), path)
    for name in slices:
        shown = sample_rows(len(table))
        data = slice_data(s, name, held, inputs=table.inputs[shown], targets=table.targets[shown])
        written[f"slice_{name}"] = save_figure(draw_slice(data), out / f"slice_{safe_name(name)}.png")
    return written
