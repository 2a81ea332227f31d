"""``rollfit plot``: PNGs of a trained run under ``<run>/plots/``.

Loss curves, parity plot, residual histogram, a filled contour of the predicted surface for
each input pair named with ``--pairs`` (default: the first two inputs) and 1-D slices along
``--slice`` inputs; inputs not on an axis are held at ``--hold`` values (default: their
training median).
"""
from __future__ import annotations

ORDER = 5

import argparse

from .main import add_debug


def add_plot_options(p: argparse.ArgumentParser) -> None:
    """The options shared by ``plot`` and ``report``."""
    p.add_argument("--run", required=True, metavar="DIR", help="run folder")
    p.add_argument("--pairs", nargs="+", metavar="A,B",
                   help="input pairs for contour plots, e.g. gait_stride,gait_cadence (default: the first two inputs)")
    p.add_argument("--slice", nargs="+", metavar="NAME", help="inputs for 1-D slices (default: the first input)")
    p.add_argument("--hold", nargs="+", metavar="NAME=VALUE", default=[],
                   help="value of an input not on a plot's axes (default: its training median)")


def plot_options(args: argparse.Namespace) -> dict:
    """``pairs``, ``slices`` and ``hold`` keyword arguments from parsed options."""
    from ..analysis.plots import parse_hold, parse_pairs

    return {"pairs": parse_pairs(args.pairs) if args.pairs else None, "slices": args.slice,
            "hold": parse_hold(args.hold)}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot a trained run (loss, parity, residuals, contours, slices)", description=(
        "Write PNGs under RUN/plots/: loss curves, parity plot, residual histogram, contour plots of the "
        "predicted surface with training points and failed runs, and 1-D slices with the data."))
    add_plot_options(p)
    p.add_argument("--activation", help="activation of an original-pipeline run that does not record it")
    add_debug(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.plots import make_plots
    from ..analysis.surrogate import Surrogate

    written = make_plots(Surrogate.load(args.run, activation=args.activation), **plot_options(args))
    for path in written.values():
        print(path)
    return 0
