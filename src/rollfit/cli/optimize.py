"""``rollfit optimize``: the inputs that minimize (or maximize) a trained run's output.

Prints a table (inputs, predicted outputs, constraint residuals, distance to the nearest
training point, warnings) or, with ``--json``, one JSON object for scripts. Exit code 0
when a feasible optimum was found, 1 when the constraints cannot be met (the closest point
is still printed), 2 for a usage error.

``--vary NAME=LO:HI:STEPS`` traces the optimum along swept values (the grid of all
combinations when repeated): a NAME that is an input is fixed at each value, any other NAME
is a symbol for the constraints, e.g. ``--constraint "gait_stride*gait_cadence=speed"
--vary speed=0.8:1.4:13`` gives the cheapest gait at each speed. All points are optimized
together as one batch; a CSV (one row per point) and a PNG along the first name are
written. (``rollfit sweep-optimum`` is the old, deprecated name of this.)

``--risk K`` (a model with an uncertainty: gp, robust_gp, ensemble) optimizes the risk-averse
``target + K * std`` (``--maximize``: ``target - K * std``) instead of the mean alone, so the
optimum avoids inputs where the model is unsure; the predicted std is printed with the outputs.
"""
from __future__ import annotations

ORDER = 8

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .args import (SEED, add_list, check_run, command, integer, number, parse_assignments, parse_number,
                   split_assignment)

MAX_STARTS = 100_000
MAX_VARY_POINTS = 10_000  # sweep points of --vary (all combinations)
MAX_BATCH = 2_000_000  # sweep points x starts, optimized as one batch
PATH_CSV = "optimum_path.csv"


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "optimize", "run", "activation", "json",
                help="find the inputs that minimize (or maximize) an output, or trace the optimum (--vary)",
                description=(
        "Find the inputs of a trained run that minimize (--maximize: maximize) an output or a weighted sum of "
        "outputs, within the training range or given bounds, with inputs fixed and constraints such as "
        "'gait_stride*gait_cadence=1.2'. Many starts are optimized together; the best feasible one wins. "
        "--risk K (a model with an uncertainty) optimizes the risk-averse mean + K*std instead. "
        "--vary traces the optimum along swept values and writes a CSV and a plot."))
    add_problem_arguments(p)
    add_vary_arguments(p)
    p.set_defaults(func=run)


def device_name(text: str) -> str:
    """An argparse type: cpu, cuda, cuda:N or auto."""
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, but got '{text:.40}'")
    return text


def add_problem_arguments(p: argparse.ArgumentParser) -> None:
    """The optimization problem and the optimizer's settings."""
    p.add_argument("--target", required=True, metavar="EXPR",
                   help="output label to optimize, or an expression over output labels, e.g. 'cot+0.1*effort'")
    p.add_argument("--maximize", action="store_true", help="maximize the target instead of minimizing it")
    p.add_argument("--risk", type=number(0.0, what="a finite number"), default=0.0, metavar="K",
                   help="risk aversion, for a model with an uncertainty (gp, robust_gp, ensemble): minimize "
                        "target + K*std (maximize: target - K*std), e.g. 1.96 for the upper end of the 95%% "
                        "interval (default: 0, the mean alone)")
    add_list(p, "--fix", default=[], metavar="NAME=VALUE",
             help="hold an input at a value; outside the training range is allowed, with a warning")
    add_list(p, "--bounds", default=[], metavar="NAME=LO:HI",
             help="search range of an input (default: the training range; LO or HI may be empty)")
    add_list(p, "--constraint", default=[], metavar="EXPR",
             help="equality or inequality over inputs, e.g. 'gait_stride*gait_cadence=1.2' or "
                  "'gait_stride/gait_cadence<=1.3' (operators + - * / ^ and parentheses)")
    p.add_argument("--starts", type=integer(1, MAX_STARTS), default=64, metavar="N",
                   help="random starts optimized together (default: %(default)s)")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seed of the starts (default: %(default)s)")
    p.add_argument("--steps", type=integer(1, 1_000_000), default=800, metavar="N",
                   help="optimizer steps; the step size decays over them (default: %(default)s)")
    p.add_argument("--device", type=device_name, default=None, metavar="DEVICE",
                   help="torch device: cpu, cuda, cuda:N or auto (default: where the model is loaded: cpu)")


def add_vary_arguments(p: argparse.ArgumentParser) -> None:
    """``--vary`` and the files it writes."""
    add_list(p, "--vary", default=[], metavar="NAME=LO:HI:STEPS",
             help=f"trace the optimum: NAME over STEPS values from LO to HI (several: all combinations, at most "
                  f"{MAX_VARY_POINTS} points); an input is fixed at each value, any other name is a symbol "
                  f"used in a --constraint")
    p.add_argument("--csv", metavar="FILE", help=f"with --vary: CSV file to write (default: RUN/{PATH_CSV})")
    p.add_argument("--plot", metavar="FILE", help="with --vary: PNG to write (default: the CSV's name with .png)")
    p.add_argument("--no-plot", action="store_true", help="with --vary: write the CSV only")


# ----------------------------------------------------------------------------- option parsing
def parse_fix(items: Sequence[str]) -> dict[str, float]:
    """``--fix NAME=VALUE`` items -> {name: value}."""
    return parse_assignments(items, "--fix")


def parse_bounds(items: Sequence[str]) -> dict[str, tuple[Optional[float], Optional[float]]]:
    """``--bounds NAME=LO:HI`` items -> {name: (lo, hi)}; an empty side keeps the training bound."""
    from ..errors import ConfigError

    out: dict[str, tuple[Optional[float], Optional[float]]] = {}
    for item in items:
        name, rest = split_assignment(item, "--bounds", "NAME=LO:HI")
        parts = rest.split(":")
        if len(parts) != 2:
            raise ConfigError(f"--bounds {name}: expected LO:HI, but got '{rest}'")
        lo, hi = (None if not p.strip() else parse_number(p.strip(), f"--bounds {name}") for p in parts)
        out[name] = (lo, hi)
    return out


def parse_vary(items: Sequence[str], starts: int = 1) -> dict[str, list[float]]:
    """``NAME=LO:HI:STEPS`` items -> {name: values} (STEPS >= 1; 1 gives LO alone). The grid
    size is checked against ``MAX_VARY_POINTS`` (and times ``starts`` against ``MAX_BATCH``)
    before any value is made."""
    from ..errors import ConfigError

    spec: dict[str, tuple[float, float, int]] = {}
    for item in items:
        name, rest = split_assignment(item, "--vary", "NAME=LO:HI:STEPS")
        parts = rest.split(":")
        if len(parts) != 3:
            raise ConfigError(f"--vary {name}: expected LO:HI:STEPS, but got '{rest}'")
        lo, hi = parse_number(parts[0], f"--vary {name} LO"), parse_number(parts[1], f"--vary {name} HI")
        steps = int(parts[2]) if re.fullmatch(r"\s*\d{1,18}\s*", parts[2]) else 0
        if steps < 1:
            raise ConfigError(f"--vary {name}: expected STEPS to be a positive integer, but got '{parts[2]:.40}'")
        if name in spec:
            raise ConfigError(f"--vary {name}: expected each name once, but got it twice")
        spec[name] = (lo, hi, steps)
    check_grid_size(spec, starts)
    import numpy as np

    return {name: [float(f"{v:.12g}") for v in np.linspace(lo, hi, n)] for name, (lo, hi, n) in spec.items()}


def check_grid_size(spec: dict[str, tuple[float, float, int]], starts: int) -> None:
    from ..errors import ConfigError

    points = math.prod(n for _, _, n in spec.values())
    if points > MAX_VARY_POINTS:
        shown = " x ".join(f"{n} ({name})" for name, (_, _, n) in spec.items())
        raise ConfigError(f"--vary: expected at most {MAX_VARY_POINTS} sweep points in all, but got {shown} = "
                          f"{points}; use fewer STEPS")
    if points * starts > MAX_BATCH:
        raise ConfigError(f"--starts: expected sweep points x starts <= {MAX_BATCH} (one batch), but got "
                          f"{points} x {starts}; use fewer --starts or STEPS")


# ----------------------------------------------------------------------------- output
def json_ready(obj: Any) -> Any:
    """Replace non-finite floats by None so the output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def format_result(res: Any) -> str:
    """The human-readable table of an ``OptimizationResult``."""
    goal = "maximize" if res.maximize else "minimize"
    lines = [f"{goal} {res.target}: {res.message}", ""]
    width = max([len(k) for k in list(res.inputs) + list(res.outputs) + list(res.constraints)] + [10])
    lines.append(f"{'input':<{width}}  {'optimum':>12}  search range")
    for lbl, v in res.inputs.items():
        rng = "fixed" if lbl in res.fixed else "[{:.6g}, {:.6g}]".format(*res.bounds[lbl])
        lines.append(f"{lbl:<{width}}  {v:>12.6g}  {rng}")
    if res.output_std:
        lines += ["", f"{'output':<{width}}  {'predicted':>12}  {'std':>12}"]
        lines += [f"{lbl:<{width}}  {v:>12.6g}  {res.output_std[lbl]:>12.4g}" for lbl, v in res.outputs.items()]
    else:
        lines += ["", f"{'output':<{width}}  {'predicted':>12}"]
        lines += [f"{lbl:<{width}}  {v:>12.6g}" for lbl, v in res.outputs.items()]
    if res.constraints:
        lines += ["", f"{'constraint':<{width}}  {'lhs - rhs':>12}"]
        lines += [f"{c:<{width}}  {v:>12.3g}" for c, v in res.constraints.items()]
    lines += ["", f"objective ({res.target}): {res.objective:.6g}"]
    if res.objective_std is not None:
        from ..analysis.optimize import Z95

        sign = "-" if res.maximize else "+"
        lines += [f"std of the objective: {res.objective_std:.4g}",
                  f"risk-averse objective ({res.target} {sign} {res.risk:g}*std, the one optimized): "
                  f"{res.risk_objective:.6g}" if res.risk else
                  f"95% interval of the objective: [{res.objective - Z95 * res.objective_std:.6g}, "
                  f"{res.objective + Z95 * res.objective_std:.6g}]"]
    lines.append(f"feasible: {'yes' if res.feasible else 'no'}")
    if res.distance_to_nearest_training_point is None:
        lines.append(f"distance to nearest training point: unknown ({res.distance_note})")
    else:
        near = ", ".join(f"{k}={v:.6g}" for k, v in (res.nearest_training_point or {}).items())
        dist = res.distance_to_nearest_training_point
        lines.append(f"distance to nearest training point: {dist:.3g} std (at {near})")
        lines.append(f"  ({res.distance_note})")
    return "\n".join(lines)


def print_warnings(warnings: Sequence[str], command: str = "optimize") -> None:
    for w in dict.fromkeys(warnings):
        print(f"rollfit {command}: warning: {w}", file=sys.stderr)


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
    fix, bounds = parse_fix(args.fix), parse_bounds(args.bounds)
    vary = parse_vary(args.vary, args.starts) if args.vary else None
    if vary is None and (args.csv or args.plot or args.no_plot):
        from ..errors import ConfigError

        flag = "--csv" if args.csv else "--plot" if args.plot else "--no-plot"
        raise ConfigError(f"{flag}: expected it only with --vary (it names what --vary writes), but got no --vary")
    check_run(args.run)
    from ..analysis.surrogate import Surrogate

    sur = Surrogate.load(args.run, args.activation)
    problem = dict(maximize=args.maximize, fix=fix, bounds=bounds, constraints=args.constraint, starts=args.starts,
                   seed=args.seed, device=args.device, steps=args.steps, risk=args.risk)
    return run_path(args, sur, vary, problem) if vary else run_single(args, sur, problem)


def run_single(args: argparse.Namespace, sur, problem: dict) -> int:
    """One optimum: a table or JSON; 1 when it is infeasible."""
    from ..analysis.optimize import optimize

    res = optimize(sur, args.target, **problem)
    print_warnings(res.warnings, args.command)
    if args.json:
        print(json.dumps(json_ready(res.to_dict()), indent=2))
    else:
        print(format_result(res))
    return 0 if res.feasible else 1


def run_path(args: argparse.Namespace, sur, vary: dict[str, list[float]], problem: dict) -> int:
    """The optimum at every --vary point: a table (or JSON rows), the CSV and the plot; 1 when
    any point is infeasible."""
    from ..analysis.optimize import sweep_optimum, write_sweep_csv, write_sweep_plot

    out = Path(args.csv) if args.csv else (sur.run_dir or Path(".")) / PATH_CSV
    if not args.csv and sur.folder is not None:  # a read-only run folder: fail before computing, naming --csv
        sur.folder.check_output("--csv FILE")
    sweep = sweep_optimum(sur, args.target, vary, **problem)
    print_warnings(sweep.warnings, args.command)
    edge = sum(any("end of its search range" in w for w in r.warnings) for r in sweep.results)
    if edge:
        print_warnings([f"{edge} of {len(sweep.results)} optima sit on a bound of the search range"], args.command)
    print(json.dumps(json_ready({"rows": sweep.rows}), indent=2) if args.json else format_rows(sweep.rows))
    written = [write_sweep_csv(sweep, out)]
    if not args.no_plot:
        written.append(write_sweep_plot(sweep, sur.in_lbl, Path(args.plot) if args.plot else out.with_suffix(".png")))
    for path in written:
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    infeasible = sum(not r.feasible for r in sweep.results)
    if infeasible:
        print_warnings([f"{infeasible} of {len(sweep.results)} sweep points are infeasible "
                        "(feasible=False in the CSV)"], args.command)
    return 1 if infeasible else 0
