"""``report.html``: one self-contained page about a run (config, data, metrics, plots).

Everything is inside the file: CSS inline, images as base64 ``data:`` URIs, no scripts and
no network references, so it opens offline, can be mailed, and renders the same years
later. ``write_run_report`` (called by training at the end of a run unless
``trainer.report`` is false) evaluates the run, writes ``metrics_validation.json`` and the PNGs of
``plots.make_plots``, then the page, each file atomically.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from ..io import atomic_write_text
from .evaluate import METRICS, Evaluation, evaluate_run, load_run_table, metric_names, write_metrics
from .surrogate import Surrogate

CAPTIONS = {
    "loss": "Training log: every logged loss component (log scale) and the learning rate (dashed, right axis).",
    "parity": "Predicted vs true on the evaluated rows; points on the dashed line are exact.",
    "residuals": "Histogram of residuals (predicted - true) on the evaluated rows.",
    "contour": "Predicted surface over the training range; dots: training rows, circles: validation rows, "
               "red crosses: failed runs; other inputs held at the values in the title.",
    "slice": "Prediction along one input, other inputs held; black: rows near the held values.",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #ccc; padding: .3em .7em; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
.note { background: #fff4d6; border-left: 4px solid #e0a800; padding: .6em .9em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; }
"""


# ----------------------------------------------------------------------------- pieces
def _fmt(value: Any) -> str:
    """A number for a table cell (4 significant digits; n as an integer; NaN as 'n/a')."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.4g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; strings are escaped, numbers formatted and right-aligned."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = [f'<td class="num">{_fmt(c)}</td>' if isinstance(c, (int, float)) or c is None
                 else f"<td>{html.escape(str(c))}</td>" for c in row]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def data_summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(what, value) rows of a checkpoint's ``data_summary``: rows used, failed, skipped..."""
    names = [("rows used", "rows"), ("training rows", "train_rows"), ("validation rows", "val_rows"),
             ("param groups read", "groups"), ("failed runs (not used)", "failed"),
             ("skipped rows (policy skip)", "skipped")]
    out: list[tuple[str, Any]] = [(label, int(summary[key])) for label, key in names if key in summary]
    for f in summary.get("files") or []:
        out.append(("file", str(f)))
    return out


def metrics_rows(metrics: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    """One table row per output: label then the metrics in ``metric_names`` order (``METRICS``,
    then nll and coverage_95 for a model with an uncertainty)."""
    names = metric_names(metrics)
    return [[lbl, *[m.get(k) for k in names]] for lbl, m in metrics.items()]


def cv_rows(cv_json: Mapping[str, Any]) -> list[list[Any]]:
    """One row per output of a ``metrics_cv.json``: 'mean ± std' per metric."""
    rows = []
    for lbl, ms in (cv_json.get("per_output") or {}).items():
        rows.append([lbl, *[f"{_fmt(ms[k]['mean'])} ± {_fmt(ms[k]['std'])}" for k in METRICS if k != "n"]])
    return rows


def auto_section(auto: Optional[Mapping[str, Any]]) -> list[str]:
    """HTML of ``model.kind: auto``'s choice (the checkpoint's ``auto``): the candidate x fold table."""
    if not auto or not auto.get("table"):
        return []
    k = int(auto.get("folds", 0))
    rows = [[kind, *r["folds"], r["cv"], ", ".join(map(str, r.get("epochs") or [])) or "-", r.get("seconds")]
            for kind, r in auto["table"].items()]
    notes = "".join(f'<p class="note">{html.escape(str(n))}</p>' for n in (auto.get("skipped") or {}).values())
    return [f"<h2>Model choice (model.kind auto): {html.escape(str(auto.get('chosen')))}</h2>",
            f"<p>{k}-fold cross-validation of the candidates on the training rows; score: "
            f"{html.escape(str(auto.get('score', '')))}. Lowest wins (within 1% of it, the earlier candidate); it was fitted again on all training rows"
            + (f" for {int(auto['max_epochs'])} epochs (the folds' median best epoch)" if auto.get("max_epochs") else "")
            + ".</p>", notes,
            _table(["candidate", *[f"fold {i + 1}" for i in range(k)], "pooled", "best epochs", "seconds"], rows)]


def outliers_section(outliers: Optional[Sequence[Mapping[str, Any]]], kind: str = "") -> list[str]:
    """HTML of the training rows a robust GP flagged as gross outliers (the checkpoint's
    ``outliers``: training row, param_idx, output), so that they can be checked in the files."""
    if outliers is None or kind != "robust_gp":
        return []
    if not outliers:
        return ["<h2>Outliers</h2>", "<p>The robust GP flagged no training row as a gross outlier.</p>"]
    rows = [[o.get("param_idx"), o.get("output"), o.get("row")] for o in outliers]
    return ["<h2>Outliers</h2>",
            f"<p>The robust GP flagged {len(rows)} training row(s) as gross outliers and down-weighted them "
            "(a failed simulation marked successful, a logging error): check these groups in the rollout files.</p>",
            _table(["param_idx", "output", "training row"], rows)]


def _image(name: str, png: bytes) -> str:
    """A figure with the PNG embedded as a data: URI and a caption saying what it shows."""
    kind = name.split("_", 1)[0]
    caption = CAPTIONS.get(kind, "")
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(name)}" src="{src}">'
            f"<figcaption><b>{html.escape(name)}</b>: {html.escape(caption)}</figcaption></figure>")


# ----------------------------------------------------------------------------- the page
def report_html(title: str, run_config: Mapping[str, Any], summary: Mapping[str, Any], evaluation: Evaluation,
                images: Mapping[str, bytes], cv_json: Optional[Mapping[str, Any]] = None,
                checkpoint: str = "", auto: Optional[Mapping[str, Any]] = None,
                checkpoint_info: Sequence[str] = (), outliers: Optional[Sequence[Mapping[str, Any]]] = None,
                kind: str = "") -> str:
    """The whole page as a string (pure: no files read or written)."""
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>checkpoint <code>{html.escape(checkpoint)}</code>; written "
             f"{_dt.datetime.now().isoformat(timespec='seconds')}</p>", *checkpoint_info,
             "<h2>Data</h2>", _table(["", "value"], data_summary_rows(summary)) if summary
             else "<p>The checkpoint records no data summary.</p>",
             "<h2>Metrics</h2>", f"<p>On {html.escape(evaluation.describe())}, in original units.</p>"]
    if evaluation.training_metrics:
        parts.append('<p class="note">train_split was 1.0, so these rows were also used for training: these '
                     "are training metrics, not an estimate of accuracy on new inputs. Run "
                     "<code>rollfit evaluate --run RUN --cv 5</code> for cross-validated metrics.</p>")
    parts.append(_table(["output", *metric_names(evaluation.metrics)], metrics_rows(evaluation.metrics)))
    if evaluation.y_std is not None:
        parts.append("<p>nll: Gaussian negative log likelihood of the true values under the predicted mean and "
                     "std (mean per row, lower is better); coverage_95: fraction of rows inside mean ± 1.96 std "
                     "(near 0.95 when the uncertainty is honest).</p>")
    if cv_json:
        parts += [f"<h3>{int(cv_json.get('k', 0))}-fold cross-validation (mean ± std over folds)</h3>",
                  _table(["output", *[m for m in METRICS if m != "n"]], cv_rows(cv_json)),
                  "<p>All out-of-fold predictions together:</p>",
                  _table(["output", *METRICS], metrics_rows(cv_json.get("pooled") or {}))]
    parts += auto_section(auto)
    parts += outliers_section(outliers, kind)
    parts.append("<h2>Plots</h2>")
    parts += [_image(name, png) for name, png in images.items()]
    config_text = yaml.safe_dump(dict(run_config), sort_keys=False) if run_config else "(none)"
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(config_text)}</pre>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _read_cv(path: Path) -> Optional[dict[str, Any]]:
    """The run's ``metrics_cv.json``, if a cross-validation was run and the file is readable."""
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def checkpoint_notes(s: Surrogate) -> list[str]:
    """HTML paragraphs saying which checkpoint the report is of: best.ckpt (its epoch and
    validation loss) or an ep_*.ckpt, and, for train_split 1.0, that "best" then only means
    the lowest training error."""
    from ..runs.folder import BEST_FILE, list_checkpoints

    cfg, name = s.config, s.checkpoint.name if s.checkpoint is not None else ""
    split = cfg.get("split") or {}
    last = list_checkpoints(s.folder.root) if not s.folder.is_stray else []
    trained = f" of a run trained to epoch {int(last[-1].stem[3:])}" if last else ""
    if name == BEST_FILE and "best_epoch" in cfg:
        loss = (cfg.get("loss") or {}).get("recon_type", "mse") if float(split.get("train_split", 1.0)) < 1.0 else "mse"
        what = (f"the weights of the lowest validation loss: epoch {int(cfg['best_epoch'])} (validation loss "
                f"{_fmt(cfg.get('best_val'))}, {loss} in training units){trained}; every command uses best.ckpt "
                "when a run has one")
    elif name == BEST_FILE:
        what = "the fitted model"
    elif name.startswith("ep_") and name[3:-5].isdigit():
        what = f"the checkpoint of epoch {int(name[3:-5])}"
    else:
        what = "the checkpoint named"
    notes = [f"<p>Model: <code>{html.escape(name)}</code>, {html.escape(what)}.</p>"]
    if name == BEST_FILE and "best_epoch" in cfg and float(split.get("train_split", 0.0)) >= 1.0:
        notes.append('<p class="note">data.train_split is 1.0: the validation rows are the training rows, so '
                     "best.ckpt is the epoch of the lowest training error and cannot guard against overfitting; "
                     "set data.train_split below 1 (e.g. 0.8) to choose the best epoch on held-out rows.</p>")
    return notes


def write_run_report(run: str | Path | Surrogate, table=None, pairs: Optional[Sequence[Sequence[str]]] = None,
                     slices: Optional[Sequence[str]] = None, hold: Optional[Mapping[str, float]] = None,
                     output: Optional[str | Path] = None) -> Path:
    """Evaluate a run, write ``metrics_validation.json`` (``metrics_training.json`` for
    train_split 1.0), ``plots/*.png`` and ``report.html``; returns the page's path.

    Metrics of other files (``rollfit evaluate --hdf5``) live in their own files and are
    never overwritten here. ``table`` is the run's data already in memory (training passes
    it), else it is read from the run's configured files. ``pairs``, ``slices`` and ``hold``
    are as in ``make_plots``; ``output`` puts the outputs elsewhere (a read-only run).
    """
    from .plots import make_plots

    s = run if isinstance(run, Surrogate) else Surrogate.load(run)
    folder = s.folder if output is None else s.folder.with_output(output)
    folder.check_output()
    table = table if table is not None else load_run_table(s)
    evaluation = evaluate_run(s, table=table)
    write_metrics(folder, evaluation)
    written = make_plots(s, pairs, slices, hold, table=table, evaluation=evaluation, output=output)
    images = {name: Path(p).read_bytes() for name, p in written.items()}
    summary = s.config.get("data_summary") or {
        "rows": len(table), "groups": table.n_groups, "failed": table.n_failed, "skipped": table.n_skipped,
        "files": list(table.files)}
    page = report_html(f"rollfit report: {folder.root.name}", s.config.get("run_config") or {}, summary,
                       evaluation, images, _read_cv(folder.metrics("cv")), checkpoint=str(s.checkpoint.name),
                       auto=s.config.get("auto"), checkpoint_info=checkpoint_notes(s),
                       outliers=s.config.get("outliers"), kind=str(s.config.get("kind", "mlp")))
    path = folder.report
    atomic_write_text(path, page)
    return path
