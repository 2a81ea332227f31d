"""``rollfit report``: one self-contained ``report.html`` for a trained run.

Evaluates the run (``metrics.json``), draws its plots (``plots/``) and writes a page with the
config, the data summary, the metrics and the images embedded; it opens offline.
"""
from __future__ import annotations

ORDER = 6

import argparse

from .main import add_debug
from .plot import add_plot_options, plot_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a self-contained report.html for a run", description=(
        "Evaluate a run, draw its plots and write RUN/report.html with the config, data summary (rows used, "
        "failed, skipped), metrics and plots embedded; no network access is needed to view it."))
    add_plot_options(p)
    add_debug(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.report import write_run_report

    print(write_run_report(args.run, **plot_options(args)))
    return 0
