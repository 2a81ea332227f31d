"""``rollfit sweep-optimum``: the old name of ``rollfit optimize --vary`` (hidden, deprecated).

It takes the old options (``--output CSV`` for ``--csv``) and prints a one-line note naming
the new form, then runs ``optimize`` with them.
"""
from __future__ import annotations

ORDER = 99

import argparse
import sys

from .args import groups, rename
from .optimize import add_problem_arguments, add_vary_arguments, run as run_optimize


def register(sub: argparse._SubParsersAction) -> None:
    # no help=: argparse then leaves it out of `rollfit --help` (and of the generated reference)
    p = sub.add_parser("sweep-optimum", parents=groups("run", "activation", "json", "debug"))
    add_problem_arguments(p)
    add_vary_arguments(p)
    rename(p, "--output", "--csv")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    print("rollfit sweep-optimum: warning: 'sweep-optimum' is deprecated; use 'rollfit optimize --vary "
          "NAME=LO:HI:STEPS' (same options, --csv FILE for --output)", file=sys.stderr)
    if not args.vary:
        from ..errors import ConfigError

        raise ConfigError("--vary: expected NAME=LO:HI:STEPS (sweep-optimum traces the optimum along it), "
                          "but got none")
    return run_optimize(args)
