"""``rollfit optimize``: the inputs that minimize (or maximize) a trained run's output.

Prints a table (inputs, predicted outputs, constraint residuals, distance to the nearest
training point, warnings) or, with ``--json``, one JSON object for scripts. Exit code 0
when a feasible optimum was found, 1 when the constraints cannot be met (the closest point
is still printed), 2 for a usage error. The option parsers here are shared with
``rollfit sweep-optimum``.
"""
from __future__ import annotations

ORDER = 8

import argparse
import json
import math
import sys
from typing import Any, Optional, Sequence

from .main import add_debug


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("optimize", help="find the inputs that minimize (or maximize) an output", description=(
        "Find the inputs of a trained run that minimize (--maximize: maximize) an output or a weighted sum of "
        "outputs, within the training range or given bounds, with inputs fixed and constraints such as "
        "'gait_stride*gait_cadence=1.2'. Many starts are optimized together; the best feasible one wins."))
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (inputs, outputs, constraints, feasible, ...)")
    add_problem_arguments(p)
    add_debug(p)
    p.set_defaults(func=run)


def add_problem_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``optimize`` and ``sweep-optimum``."""
    p.add_argument("--run", required=True, metavar="DIR", help="run folder (newest checkpoint) or a checkpoint file")
    p.add_argument("--target", required=True, metavar="EXPR",
                   help="output label to optimize, or an expression over output labels, e.g. 'cot+0.1*effort'")
    p.add_argument("--maximize", action="store_true", help="maximize the target instead of minimizing it")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="hold an input at a value (repeatable); outside the training range is allowed, with a warning")
    p.add_argument("--bounds", action="append", default=[], metavar="NAME=LO:HI",
                   help="search range of an input (repeatable; default: the training range; LO or HI may be empty)")
    p.add_argument("--constraint", action="append", default=[], metavar="EXPR",
                   help="equality or inequality over inputs, e.g. 'gait_stride*gait_cadence=1.2' or "
                        "'gait_stride/gait_cadence<=1.3' (repeatable; operators + - * / ^ and parentheses)")
    p.add_argument("--starts", type=int, default=64, metavar="N",
                   help="random starts optimized together (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the starts (default: %(default)s)")
    p.add_argument("--steps", type=int, default=800, metavar="N",
                   help="optimizer steps; the step size decays over them (default: %(default)s)")
    p.add_argument("--device", default=None,
                   help="torch device: cpu, cuda or auto (default: where the model is loaded: cpu)")
    p.add_argument("--activation", help="activation of an original-pipeline run that does not record it")


# ----------------------------------------------------------------------------- option parsing
def _number(text: str, where: str) -> float:
    from ..errors import ConfigError

    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, but got '{text}'") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, but got '{text}'")
    return value


def split_assignment(item: str, flag: str, form: str) -> tuple[str, str]:
    """``NAME=REST`` -> (NAME, REST); a missing '=' or name is an error showing ``form``."""
    from ..errors import ConfigError

    name, sep, rest = item.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"{flag}: expected {form}, but got '{item}'")
    return name.strip(), rest.strip()


def parse_fix(items: Sequence[str]) -> dict[str, float]:
    """``--fix NAME=VALUE`` items -> {name: value}."""
    from ..errors import ConfigError

    out: dict[str, float] = {}
    for item in items:
        name, value = split_assignment(item, "--fix", "NAME=VALUE")
        if name in out:
            raise ConfigError(f"--fix {name}: expected each input once, but got it twice")
        out[name] = _number(value, f"--fix {name}")
    return out


def parse_bounds(items: Sequence[str]) -> dict[str, tuple[Optional[float], Optional[float]]]:
    """``--bounds NAME=LO:HI`` items -> {name: (lo, hi)}; an empty side keeps the training bound."""
    from ..errors import ConfigError

    out: dict[str, tuple[Optional[float], Optional[float]]] = {}
    for item in items:
        name, rest = split_assignment(item, "--bounds", "NAME=LO:HI")
        parts = rest.split(":")
        if len(parts) != 2:
            raise ConfigError(f"--bounds {name}: expected LO:HI, but got '{rest}'")
        lo, hi = (None if not p.strip() else _number(p.strip(), f"--bounds {name}") for p in parts)
        out[name] = (lo, hi)
    return out


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
    lines += ["", f"{'output':<{width}}  {'predicted':>12}"]
    lines += [f"{lbl:<{width}}  {v:>12.6g}" for lbl, v in res.outputs.items()]
    if res.constraints:
        lines += ["", f"{'constraint':<{width}}  {'lhs - rhs':>12}"]
        lines += [f"{c:<{width}}  {v:>12.3g}" for c, v in res.constraints.items()]
    lines += ["", f"objective ({res.target}): {res.objective:.6g}", f"feasible: {'yes' if res.feasible else 'no'}"]
    if res.distance_to_nearest_training_point is None:
        lines.append(f"distance to nearest training point: unknown ({res.distance_note})")
    else:
        near = ", ".join(f"{k}={v:.6g}" for k, v in (res.nearest_training_point or {}).items())
        dist = res.distance_to_nearest_training_point
        lines.append(f"distance to nearest training point: {dist:.3g} std (at {near})")
        lines.append(f"  ({res.distance_note})")
    return "\n".join(lines)


def print_warnings(warnings: Sequence[str], command: str) -> None:
    for w in dict.fromkeys(warnings):
        print(f"rollfit {command}: warning: {w}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..analysis.optimize import optimize
    from ..analysis.surrogate import Surrogate

    fix, bounds = parse_fix(args.fix), parse_bounds(args.bounds)
    sur = Surrogate.load(args.run, args.activation)
    res = optimize(sur, args.target, maximize=args.maximize, fix=fix, bounds=bounds, constraints=args.constraint,
                   starts=args.starts, seed=args.seed, device=args.device, steps=args.steps)
    print_warnings(res.warnings, "optimize")
    if args.json:
        print(json.dumps(json_ready(res.to_dict()), indent=2))
    else:
        print(format_result(res))
    return 0 if res.feasible else 1
