"""``rollfit suggest``: the next parameter sets to simulate, chosen by the run's uncertainty.

Writes one row per proposed point (``--output``, CSV or ``--format json``) that the
simulation side can run as is: ``param_idx`` continuing the training files' indices, every
name of their ``parameter_names`` in file order, then the predicted mean and std of each
output and the acquisition value. Prints a short table; ``--plot FILE`` draws the points
over the predicted mean and std. The flags are checked before torch is imported.
"""
from __future__ import annotations

ORDER = 9

import argparse
from pathlib import Path

from .args import SEED, add_list, check_paths, check_run, command, integer

MAX_N = 10_000
GOALS = ("explore", "minimize", "maximize")


def goal_text(text: str) -> str:
    """An argparse type: ``explore``, ``minimize:LABEL`` or ``maximize:LABEL`` (the label is
    checked against the run's outputs once it is loaded)."""
    from ..errors import did_you_mean

    kind, sep, label = text.partition(":")
    if (kind == "explore" and not sep) or (kind in GOALS[1:] and label.strip()):
        return text
    hint = did_you_mean(kind, GOALS) if kind not in GOALS else ""
    raise argparse.ArgumentTypeError(f"expected explore, minimize:LABEL or maximize:LABEL, but got '{text:.60}'{hint}")


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "suggest", "run", "activation", "hdf5",
                help="propose the next parameter sets to simulate (explore, or minimize/maximize an output)",
                description=(
        "Propose --n parameter sets to simulate next from a run with an uncertainty (ensemble, gp, robust_gp): "
        "--goal explore (default) spreads them where the model is least sure (integrated posterior variance); "
        "minimize:LABEL / maximize:LABEL is batch Bayesian optimization (noisy expected improvement). Bounds, "
        "fixed inputs and constraints as in 'rollfit optimize' hold exactly; a constraint on outputs "
        "('cot<60') is honoured through the model. The file lists every parameter of the training files, "
        "ready to simulate; train on the old files plus the new rollouts to close the loop."))
    p.add_argument("--n", type=integer(1, MAX_N), required=True, metavar="N", help="number of points to propose")
    p.add_argument("--output", required=True, metavar="FILE",
                   help="file of proposed points to write (CSV, or JSON with --format json)")
    p.add_argument("--goal", type=goal_text, default="explore", metavar="GOAL",
                   help="explore (default), minimize:LABEL or maximize:LABEL")
    add_list(p, "--constraint", default=[], metavar="EXPR",
             help="equality or inequality over inputs, e.g. 'gait_stride*gait_cadence=1.2', or over outputs, "
                  "e.g. 'cot<60' (operators + - * / ^ and parentheses)")
    add_list(p, "--fix", "--fixed", default=[], metavar="NAME=VALUE",
             help="hold an input at a value; outside the training range is allowed, with a warning")
    add_list(p, "--bounds", default=[], metavar="NAME=LO:HI",
             help="search range of an input (default: the training range; LO or HI may be empty)")
    p.add_argument("--format", dest="fmt", choices=("csv", "json"), default="csv",
                   help="csv (default) or json")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seed of the random starts (default: %(default)s)")
    p.add_argument("--plot", metavar="FILE", help="PNG of the proposed points over the predicted mean and std")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import check_writable
    from .optimize import parse_bounds, parse_fix, print_warnings

    fixed, bounds = parse_fix(args.fix), parse_bounds(args.bounds)
    check_paths(args.hdf5)
    check_run(args.run)
    for path in filter(None, (args.output, args.plot)):
        if Path(path).is_dir():
            from ..errors import ConfigError

            raise ConfigError(f"{path}: expected a file to write, but it is a folder")
        check_writable(Path(path).expanduser().parent or Path("."))
    from ..analysis.suggest import suggest, write_plot
    from ..analysis.surrogate import Surrogate

    sur = Surrogate.load(args.run, args.activation)
    result = suggest(sur, args.n, goal=args.goal, constraints=args.constraint, fixed=fixed, bounds=bounds, seed=args.seed,
                     hdf5=args.hdf5 or None)
    print_warnings(result.warnings, args.command)
    print(f"{len(result.rows)} points for goal {result.goal} ({result.acquisition_name}):")
    print(result.table())
    written = [result.write(args.output, args.fmt)]
    if args.plot:
        written.append(write_plot(sur, result, args.plot))
    for path in written:
        print(f"wrote {path}")
    return 0
