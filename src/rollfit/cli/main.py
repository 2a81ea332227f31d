"""``rollfit`` command line: one subcommand per module in this package.

Each command module defines ``ORDER`` (its place in ``rollfit --help``) and
``register(subparsers)``, which adds its parser and sets ``func`` to a handler taking the
parsed arguments and returning an exit code. Modules are found by listing this package, so
a new command is one new file; the arguments it shares with others come from ``args``
(``args.command(sub, "name", "run", "activation", ...)``). Errors that rollfit raises on
purpose (``RollfitError``), usage errors and I/O errors become one line on stderr and exit
code 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Optional, Sequence

from ..errors import RollfitError
from .args import CommandParser, split_overrides
from .nproc import report_error, worker_exit, worker_folder


def command_modules() -> list[ModuleType]:
    """The subcommand modules of this package (those with ``register``), in ``ORDER``."""
    folder = str(Path(__file__).parent)
    names = [m.name for m in pkgutil.iter_modules([folder]) if m.name not in ("main", "args", "nproc")]
    mods = [importlib.import_module(f"{__package__}.{n}") for n in names]
    return sorted((m for m in mods if hasattr(m, "register")), key=lambda m: (getattr(m, "ORDER", 99), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    from .. import __version__

    parser = CommandParser(prog="rollfit", description="Regression surrogates from HDF5 rollout files.")
    parser.add_argument("--version", action="version", version=f"rollfit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for module in command_modules():
        module.register(sub)
    return parser


def visible_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The documented subcommands (hidden deprecated aliases left out), in ``--help`` order."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: sub.choices[a.dest] for a in sub._choices_actions}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``rollfit`` console script: the exit code of the command.

    One contract for every command: 0 when it did what was asked; on an error exactly one
    line ``rollfit <command>: error: ...`` on stderr and exit code 2 (usage and data errors;
    1 for an unexpected internal error), a traceback only with ``--debug``.
    """
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _one_line_warning
    try:
        code = _run(argv)
    except KeyboardInterrupt:
        if "--debug" in argv:
            raise
        if as_program:
            _ignore_sigint()  # a second Ctrl-C while this one is reported and the process exits
        code = _interrupted(argv)
    if as_program and (code in (130, 143) or worker_folder() is not None):
        _ignore_sigint()  # stopped by a signal (or a --nproc worker): a second Ctrl-C while exiting is ignored
    return worker_exit(code)


def _run(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error (already printed, one line)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        print("rollfit: error: COMMAND: expected one of " + ", ".join(visible_commands(parser)) + ", but got none",
              file=sys.stderr)
        return 2
    split_overrides(args, argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if args.debug:
            raise
        report_error(f"rollfit {args.command}: error: {one_line(exc)}")
        return exc.exit_code if isinstance(exc, RollfitError) else 2 if isinstance(exc, OSError) else 1


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line; an unexpected error names its type and the way to see more."""
    if isinstance(exc, RollfitError):  # its first line (a constraint error adds a caret diagram below)
        text = (str(exc).strip().splitlines() or [""])[0]
    elif isinstance(exc, OSError):
        where = f"{exc.filename}: expected to read or write it" if exc.filename else "expected to read or write a file"
        text = f"{where}, but got: {exc.strerror or exc}"
    else:
        text = (f"internal error: {type(exc).__name__}: {exc} (this is a bug in rollfit; "
                f"run with --debug for the traceback)")
    return printable(" ".join(text.split()))


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (ESC, CSI, CR, newline, BEL...)
    written as its escape: labels and names read from files reach messages as data."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _interrupted(argv: list[str]) -> int:
    """One line for Ctrl-C (from rank 0 alone under torchrun)."""
    name = next((a for a in argv if not a.startswith("-")), "")
    if os.environ.get("RANK", "0") == "0":
        print(f"rollfit{' ' + name if name else ''}: interrupted", file=sys.stderr)
    return 130


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as ``rollfit: warning: <message>``, without the source line."""
    return f"rollfit: warning: {printable(str(message))}\n"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
