"""``rollfit sweep-optimum``: the optimum traced along swept values, as CSV and a plot.

``--vary NAME=LO:HI:STEPS`` sweeps NAME over STEPS evenly spaced values (repeatable: the
grid of all combinations). A NAME that is an input is fixed at each value; any other NAME
is a symbol for the constraints, e.g. ``--constraint "gait_stride*gait_cadence=speed"
--vary speed=0.8:1.4:13`` gives the cheapest gait at each speed. All sweep points are
optimized together as one batch. Writes the CSV (one row per point) and a PNG of the
optimal inputs and the objective along the first swept name.
"""
from __future__ import annotations

ORDER = 9

import argparse
from pathlib import Path
from typing import Sequence

from .main import add_debug
from .optimize import add_problem_arguments, parse_bounds, parse_fix, print_warnings, split_assignment


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep-optimum", help="trace the optimum along swept values (CSV + plot)", description=(
        "Optimize the target at each value of a swept input or constraint symbol (e.g. the cheapest "
        "stride/cadence at each speed) and write a CSV and a plot of the optimal inputs and the objective."))
    p.add_argument("--vary", action="append", required=True, metavar="NAME=LO:HI:STEPS",
                   help="sweep NAME over STEPS values from LO to HI (repeatable: all combinations); an input is fixed "
                        "at each value, any other name is a symbol used in a --constraint")
    p.add_argument("--output", metavar="CSV", help="CSV file to write (default: RUN/sweep_optimum.csv)")
    p.add_argument("--plot", metavar="PNG", help="plot file to write (default: the CSV's name with .png)")
    p.add_argument("--no-plot", action="store_true", help="write the CSV only")
    add_problem_arguments(p)
    add_debug(p)
    p.set_defaults(func=run)


def parse_vary(items: Sequence[str]) -> dict[str, list[float]]:
    """``NAME=LO:HI:STEPS`` items -> {name: values} (STEPS >= 1; 1 gives LO alone)."""
    import numpy as np

    from ..errors import ConfigError
    from .optimize import _number

    out: dict[str, list[float]] = {}
    for item in items:
        name, rest = split_assignment(item, "--vary", "NAME=LO:HI:STEPS")
        parts = rest.split(":")
        if len(parts) != 3:
            raise ConfigError(f"--vary {name}: expected LO:HI:STEPS, but got '{rest}'")
        lo, hi = _number(parts[0], f"--vary {name} LO"), _number(parts[1], f"--vary {name} HI")
        try:
            steps = int(parts[2])
        except ValueError:
            steps = 0
        if steps < 1:
            raise ConfigError(f"--vary {name}: expected STEPS to be a positive integer, but got '{parts[2]}'")
        if name in out:
            raise ConfigError(f"--vary {name}: expected each name once, but got it twice")
        out[name] = [float(f"{v:.12g}") for v in np.linspace(lo, hi, steps)]
    return out


def format_rows(rows: list[dict], limit: int = 40) -> str:
    """The sweep's rows as a fixed-width table (the first ``limit`` rows)."""
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), 10) for c in cols}
    fmt = lambda v: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["  ".join(f"{c:>{width[c]}}" for c in cols)]
    lines += ["  ".join(f"{fmt(r[c]):>{width[c]}}" for c in cols) for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows in the CSV")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..analysis.optimize import sweep_optimum, write_sweep_csv, write_sweep_plot
    from ..analysis.surrogate import Surrogate

    fix, bounds, vary = parse_fix(args.fix), parse_bounds(args.bounds), parse_vary(args.vary)
    sur = Surrogate.load(args.run, args.activation)
    out = Path(args.output) if args.output else (sur.run_dir or Path(".")) / "sweep_optimum.csv"
    sweep = sweep_optimum(sur, args.target, vary, maximize=args.maximize, fix=fix, bounds=bounds,
                          constraints=args.constraint, starts=args.starts, seed=args.seed, device=args.device,
                          steps=args.steps)
    print_warnings(sweep.warnings, "sweep-optimum")
    edge = sum(any("end of its search range" in w for w in r.warnings) for r in sweep.results)
    if edge:
        print_warnings([f"{edge} of {len(sweep.results)} optima sit on a bound of the search range"], "sweep-optimum")
    print(format_rows(sweep.rows))
    write_sweep_csv(sweep, out)
    print(f"wrote {out}")
    if not args.no_plot:
        png = Path(args.plot) if args.plot else out.with_suffix(".png")
        write_sweep_plot(sweep, sur.in_lbl, png)
        print(f"wrote {png}")
    infeasible = sum(not r.feasible for r in sweep.results)
    if infeasible:
        print_warnings([f"{infeasible} of {len(sweep.results)} sweep points are infeasible "
                        "(feasible=False in the CSV)"], "sweep-optimum")
    return 0
