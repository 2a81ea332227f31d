"""``rollfit evaluate``: a run's accuracy in original units, honestly labelled.

Scores the run's validation rows (its own split, rebuilt) or every row of another file,
writes ``metrics.json`` into the run folder, and says plainly when the rows were also
training rows (``train_split: 1.0``). ``--cv K`` retrains the run's config K times for
cross-validated metrics (mean and spread), written to ``metrics_cv.json``.
"""
from __future__ import annotations

ORDER = 4

import argparse
import json
from typing import Any, Mapping

from .main import add_debug

TRAINING_NOTE = ("note: train_split was 1.0, so these rows were also used for training: these are training "
                 "metrics, not an estimate of accuracy on new inputs; run `rollfit evaluate --run {run} --cv 5` "
                 "for cross-validated metrics")
TRAINING_NOTE_CV = ("note: train_split was 1.0, so the rows above were also used for training: these are training "
                    "metrics; the cross-validated metrics below estimate accuracy on new inputs")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy of a trained run (RMSE, MAE, R^2, max error)", description=(
        "Metrics in original units per output on the run's validation rows (or on every row of --hdf5 files); "
        "writes metrics.json in the run folder. --cv K: K-fold cross-validation that retrains the run's config."))
    p.add_argument("--run", required=True, metavar="DIR", help="run folder (newest checkpoint) or a checkpoint file")
    p.add_argument("--hdf5", nargs="+", metavar="PATH", help="evaluate on every row of these rollout file(s) instead")
    p.add_argument("--cv", type=int, metavar="K", help="also run K-fold cross-validation (retrains K models)")
    p.add_argument("--cv-epochs", type=int, metavar="N", help="epochs per cross-validation fold (default: the run's)")
    p.add_argument("--workers", type=int, metavar="N", help="folds trained at once (default: one per core on CPU)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--activation", help="activation of an original-pipeline run that does not record it")
    add_debug(p)
    p.set_defaults(func=run)


def metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """Per output one line: rmse, mae, r2, max_abs_error, n (aligned columns)."""
    from ..analysis.evaluate import METRICS

    rows = [["output", *METRICS]]
    for lbl, m in metrics.items():
        rows.append([lbl, *[str(m[k]) if k == "n" else f"{m[k]:.4g}" for k in METRICS]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def cv_table(summary: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Per output one line of 'mean ± std' per metric."""
    from ..analysis.evaluate import METRICS

    names = [m for m in METRICS if m != "n"]
    rows = [["output", *names]]
    for lbl, ms in summary.items():
        rows.append([lbl, *[f"{ms[k]['mean']:.4g} ± {ms[k]['std']:.2g}" for k in names]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..analysis.evaluate import cross_validate, evaluate_run, json_safe, write_cv, write_metrics
    from ..analysis.surrogate import Surrogate
    from ..errors import ConfigError

    if args.cv_epochs is not None and args.cv_epochs < 1:
        raise ConfigError(f"--cv-epochs: expected a positive number of epochs, but got {args.cv_epochs}")
    if args.cv is not None and args.cv < 2:
        raise ConfigError(f"--cv: expected K >= 2 folds, but got {args.cv}")
    s = Surrogate.load(args.run, activation=args.activation)
    hdf5 = (args.hdf5 if len(args.hdf5) > 1 else args.hdf5[0]) if args.hdf5 else None
    ev = evaluate_run(s, hdf5=hdf5)
    paths = [write_metrics(s.run_dir, ev)]
    cv = None
    if args.cv is not None:
        overrides = [f"trainer.max_epochs={args.cv_epochs}"] if args.cv_epochs else []
        cv = cross_validate(s, args.cv, hdf5=hdf5, overrides=overrides, workers=args.workers,
                            progress=not args.json)
        paths.append(write_cv(s.run_dir, cv))
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
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
