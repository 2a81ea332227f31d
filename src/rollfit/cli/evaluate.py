"""``rollfit evaluate``: a run's accuracy in original units, honestly labelled.

Scores the run's validation rows (its own split, rebuilt) or every row of another file
(with ``nll`` and ``coverage_95`` for model kinds with an uncertainty), writes
``metrics_<rows>.json`` into the run folder, and says plainly when the rows were also
training rows (``train_split: 1.0``). ``--cv K`` retrains the run's config K times for
cross-validated metrics (mean and spread), written to ``metrics_cv.json``.
"""
from __future__ import annotations

ORDER = 4

import argparse
import json
from typing import Any, Mapping

from .args import COUNT, check_paths, check_run, command, rename, integer

TRAINING_NOTE = ("note: train_split was 1.0, so these rows were also used for training: these are training "
                 "metrics, not an estimate of accuracy on new inputs; run `rollfit evaluate --run {run} --cv 5` "
                 "for cross-validated metrics")
TRAINING_NOTE_CV = ("note: train_split was 1.0, so the rows above were also used for training: these are training "
                    "metrics; the cross-validated metrics below estimate accuracy on new inputs")


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "evaluate", "run", "activation", "hdf5", "outputs", "json",
                help="accuracy of a trained run (RMSE, MAE, R^2, max error; NLL and 95%% coverage)", description=(
        "Metrics in original units per output on the run's validation rows (or on every row of the --hdf5 "
        "files instead); for a model with an uncertainty also the Gaussian negative log likelihood (nll) and "
        "the fraction of rows inside the 95% interval (coverage_95); "
        "writes metrics_<rows>.json in the run folder (or --output). --cv K: K-fold cross-validation that "
        "retrains the run's config (its folds scored the same way)."))
    p.add_argument("--cv", type=integer(2, what="K", unit=" folds"), metavar="K",
                   help="also run K-fold cross-validation (retrains K models)")
    p.add_argument("--cv-epochs", type=integer(1, 10**9, what="a number of epochs"), metavar="N",
                   help="epochs per cross-validation fold (default: the run's)")
    p.add_argument("--concurrent", type=COUNT, metavar="K",
                   help="folds trained at once (default: one per core on CPU)")
    rename(p, "--workers", "--concurrent")
    p.set_defaults(func=run)


def metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """Per output one line: rmse, mae, r2, max_abs_error, n, and for a model with an
    uncertainty nll and coverage_95 (aligned columns)."""
    from ..analysis.evaluate import metric_names

    names = metric_names(metrics)
    rows = [["output", *names]]
    for lbl, m in metrics.items():
        rows.append([lbl, *[str(m[k]) if k == "n" else f"{m[k]:.4g}" for k in names]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def cv_table(summary: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Per output one line of 'mean ± std' per metric (nll and coverage_95 too when scored)."""
    from ..analysis.evaluate import METRICS, UNCERTAINTY_METRICS

    names = [m for m in METRICS + UNCERTAINTY_METRICS if m != "n" and all(m in ms for ms in summary.values())]
    rows = [["output", *names]]
    for lbl, ms in summary.items():
        rows.append([lbl, *[f"{ms[k]['mean']:.4g} ± {ms[k]['std']:.2g}" for k in names]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def run(args: argparse.Namespace) -> int:
    import sys

    check_run(args.run)
    check_paths(args.hdf5)
    from ..analysis.evaluate import evaluate_run, json_safe, save_or_warn, write_cv, write_metrics
    from ..analysis.surrogate import Surrogate
    from ..pipeline.cv import cross_validate

    s = Surrogate.load(args.run, activation=args.activation)
    folder = s.folder if args.output is None else s.folder.with_output(args.output)
    hdf5 = (args.hdf5 if len(args.hdf5) > 1 else args.hdf5[0]) if args.hdf5 else None
    ev = evaluate_run(s, hdf5=hdf5)
    paths = [save_or_warn(lambda: write_metrics(folder, ev))]
    cv = None
    if args.cv is not None:
        overrides = [f"trainer.max_epochs={args.cv_epochs}"] if args.cv_epochs else []
        cv = cross_validate(s, args.cv, hdf5=hdf5, overrides=overrides, workers=args.concurrent,
                            progress=not args.json)
        paths.append(save_or_warn(lambda: write_cv(folder, cv)))
    note = "" if not ev.training_metrics else TRAINING_NOTE_CV if cv else TRAINING_NOTE.format(run=args.run)
    if args.json:
        print(json.dumps(json_safe({"metrics": ev.to_json(), "cv": cv.to_json() if cv else None}), indent=2))
        if note:
            print(note, file=sys.stderr)
        return 0
    print(f"metrics on {ev.describe()}, original units:")
    print(metrics_table(ev.metrics))
    if note:
        print(note)
    if cv is not None:
        print(f"\n{cv.k}-fold cross-validation on {len(cv.y_true)} rows (mean ± std over folds):")
        print(cv_table(cv.summary()))
        print("all out-of-fold predictions together:")
        print(metrics_table(cv.pooled()))
    if any(paths):
        print("wrote " + ", ".join(str(p) for p in paths if p))
    return 0
