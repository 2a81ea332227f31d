"""``rollfit report``: one self-contained ``report.html`` for a trained run.

Evaluates the run (``metrics.json``), draws its plots (``plots/``) and writes a page with the
config, the data summary, the metrics and the images embedded; it opens offline.
"""
from __future__ import annotations

ORDER = 6

import argparse

from .plot import SHARED, add_plot_options, plot_options
from .args import command


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "report", *SHARED, help="write a self-contained report.html for a run", description=(
        "Evaluate a run, draw its plots and write RUN/report.html (or OUTPUT/report.html) with the config, data "
        "summary (rows used, failed, skipped), metrics and plots embedded; no network access is needed to view it."))
    add_plot_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = plot_options(args)
    from ..analysis.report import write_run_report
    from ..analysis.surrogate import Surrogate

    print(write_run_report(Surrogate.load(args.run, activation=args.activation), **options))
    return 0
