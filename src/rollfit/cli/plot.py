"""``rollfit plot``: PNGs of a trained run under ``<run>/plots/``.

Loss curves, parity plot, residual histogram, a filled contour of the predicted surface for
each input pair named with ``--pairs`` (default: the first two inputs) and 1-D slices along
``--slice`` inputs; inputs not on an axis are held at ``--hold`` values (default: their
training median).
"""
from __future__ import annotations

ORDER = 5

import argparse

from .args import add_list, check_run, command, parse_assignments

SHARED = ("run", "activation", "outputs")  # the shared groups of ``plot`` and ``report``


def add_plot_options(p: argparse.ArgumentParser) -> None:
    """The plot options shared by ``plot`` and ``report``."""
    add_list(p, "--pairs", metavar="A,B",
             help="input pairs for contour plots, e.g. gait_stride,gait_cadence (default: the first two inputs)")
    add_list(p, "--slice", metavar="NAME", help="inputs for 1-D slices (default: the first input)")
    add_list(p, "--hold", metavar="NAME=VALUE", default=[],
             help="value of an input not on a plot's axes (default: its training median)")


def parse_pairs(items: list[str]) -> list[tuple[str, str]]:
    """``--pairs A,B ...`` as name pairs."""
    from ..errors import ConfigError

    out = []
    for item in items:
        parts = [p.strip() for p in item.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--pairs '{item}': expected two input names separated by a comma, e.g. "
                              f"gait_stride,gait_cadence, but got '{item}'")
        out.append((parts[0], parts[1]))
    return out


def plot_options(args: argparse.Namespace) -> dict:
    """``pairs``, ``slices``, ``hold`` and ``output`` keyword arguments, checked (before torch)."""
    check_run(args.run)
    return {"pairs": parse_pairs(args.pairs) if args.pairs else None, "slices": args.slice,
            "hold": parse_assignments(args.hold, "--hold"), "output": args.output}


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "plot", *SHARED, help="plot a trained run (loss, parity, residuals, contours, slices)",
                description=(
        "Write PNGs under RUN/plots/ (or OUTPUT/plots/): loss curves, parity plot, residual histogram, contour "
        "plots of the predicted surface with training points and failed runs, and 1-D slices with the data."))
    add_plot_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = plot_options(args)
    from ..analysis.plots import make_plots
    from ..analysis.surrogate import Surrogate

    written = make_plots(Surrogate.load(args.run, activation=args.activation), **options)
    for path in written.values():
        print(path)
    return 0
