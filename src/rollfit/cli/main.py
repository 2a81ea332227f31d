"""``rollfit`` command line: one subcommand per module in this package.

Each command module defines ``ORDER`` (its place in ``rollfit --help``) and
``register(subparsers)``, which adds its parser and sets ``func`` to a handler taking the
parsed arguments and returning an exit code. Modules are found by listing this package, so
a new command is one new file. Errors that
rollfit raises on purpose (``RollfitError``) become one line on stderr and a non-zero
exit code; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Optional, Sequence

from ..errors import RollfitError



def command_modules() -> list[ModuleType]:
    """The subcommand modules of this package (those with ``register``), in ``ORDER``."""
    folder = str(Path(__file__).parent)
    names = [m.name for m in pkgutil.iter_modules([folder]) if m.name != "main"]
    mods = [importlib.import_module(f"{__package__}.{n}") for n in names]
    return sorted((m for m in mods if hasattr(m, "register")), key=lambda m: (getattr(m, "ORDER", 99), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="rollfit", description="Regression surrogates from HDF5 rollout files.")
    parser.add_argument("--version", action="version", version=f"rollfit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``rollfit`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RollfitError as exc:
        if args.debug:
            raise
        print(f"rollfit {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"rollfit {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as ``rollfit: warning: <message>``, without the source line."""
    return f"rollfit: warning: {message}\n"


def add_debug(parser: argparse.ArgumentParser) -> None:
    """Accept ``--debug`` after the subcommand too."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
