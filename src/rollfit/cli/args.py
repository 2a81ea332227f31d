"""The shared vocabulary of the rollfit commands: argument groups, value types, one error contract.

Every flag name means one thing in every command that has it:

``--run DIR``        an existing run folder (its best.ckpt, else newest checkpoint) or a checkpoint file, read
``--output DIR``     the folder a command writes into (``train``, ``demo`` and ``sweep`` create it;
                     ``evaluate``, ``plot`` and ``report`` write there instead of the run folder)
                     (``suggest --output FILE`` alone names a file: the proposed points)
``--csv/--plot/--file FILE``  one file a command writes, named for what it holds
``--hdf5 PATH``      rollout files, folders or globs
``--config FILE``    a YAML config; ``KEY=VALUE`` arguments override it
``--activation``     the activation of an original-pipeline run that does not record it
``--concurrent K``   jobs run at once (cross-validation folds, sweep trials)
``--samples N``      samples drawn from a sweep space
``--seed N``         seed of the command's own random choices (0 to 2**32-1)
``--json``           machine-readable output on stdout

Renamed flags (``predict --output`` is now ``--csv``, ``export --output``/``--samples`` are
``--file``/``--verify-samples``, ``evaluate --workers`` is ``--concurrent``) still work, with a
one-line note (``rename``). Option names are never abbreviated.

One list convention: a list flag takes one or more values separated by spaces and may be
repeated (the values add up), e.g. ``--fix a=1 b=2`` or ``--fix a=1 --fix b=2``.

Everything here is checked before torch is imported, so a wrong argument, a missing file or
a bad value answers at once. Usage errors follow the one contract of ``rollfit.errors``: one
line ``rollfit <command>: error: <where>: expected <X>, but got <Y>`` and exit code 2.
"""
from __future__ import annotations

import argparse
import glob
import math
import re
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from ..errors import ConfigError, DataFileNotFound, did_you_mean

SEED_MAX = 2**32 - 1
OVERRIDE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")


# ----------------------------------------------------------------------------- the parser
class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line in rollfit's grammar, exit code 2.
    Option names must be written in full (no abbreviations), so adding an option never
    changes what an existing command line means."""

    def __init__(self, *args, **kw):
        kw.setdefault("allow_abbrev", False)
        super().__init__(*args, **kw)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {plain_message(message)}\n")

    def _check_value(self, action: argparse.Action, value) -> None:
        if action.choices is not None and value not in action.choices:
            shown = action.choices
            if isinstance(action, argparse._SubParsersAction):  # hidden aliases are not offered
                shown = [a.dest for a in action._choices_actions]
            raise argparse.ArgumentError(action, choice_message(value, shown))

    def parse_known_args(self, args=None, namespace=None):
        """Old flag names (``rename``) are read as the new ones, with a one-line note each."""
        renamed = getattr(self, "renamed", {})
        if renamed and args is not None:
            args = [self._renamed(a, renamed) for a in args]
        return super().parse_known_args(args, namespace)

    def _renamed(self, arg: str, renamed: dict[str, str]) -> str:
        flag, eq, value = arg.partition("=")
        if flag not in renamed:
            return arg
        print(f"{self.prog}: warning: {flag} is deprecated; use {renamed[flag]}", file=sys.stderr)
        return renamed[flag] + eq + value

    def parse_args(self, args=None, namespace=None):
        """Like argparse's, but an unknown argument is reported by the command that got it."""
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            parser = getattr(ns, "parser", None) or self
            parser.error(unknown_message(extra[0], parser))
        return ns


def choice_message(value, choices: Iterable) -> str:
    names = [str(c) for c in choices]
    return f"expected one of {', '.join(names)}, but got '{value}'{did_you_mean(str(value), names)}"


def unknown_message(arg: str, parser: argparse.ArgumentParser) -> str:
    """An argument no option of ``parser`` takes, with the closest option name."""
    if arg.startswith("-"):
        options = [o for a in parser._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
        return (f"{arg}: expected an option of {parser.prog}, but got an unknown one"
                f"{did_you_mean(arg.split('=')[0], options)}")
    return f"'{arg}': expected no further arguments, but got this one"


_REWRITES = [
    (re.compile(r"^the following arguments are required: (.*)$"),
     lambda m: f"expected {m[1]}, but {'they are' if ',' in m[1] else 'it is'} missing"),
    (re.compile(r"^argument ([^:]+?): not allowed with argument (\S+)$"),
     lambda m: f"{m[1].split('/')[0]}: expected either {m[2]} or {m[1].split('/')[0]}, but got both"),
    (re.compile(r"^argument ([^:]+?): expected one argument$"),
     lambda m: f"{m[1].split('/')[0]}: expected a value, but got none"),
    (re.compile(r"^argument ([^:]+?): expected at least one argument$"),
     lambda m: f"{m[1].split('/')[0]}: expected one or more values, but got none"),
    (re.compile(r"^argument ([^:]+?): (.*)$", re.S), lambda m: f"{m[1].split('/')[0]}: {m[2]}"),
]


def plain_message(message: str) -> str:
    """argparse's messages in rollfit's grammar, always one line."""
    for pattern, repl in _REWRITES:
        m = pattern.match(message)
        if m:
            message = repl(m)
            break
    return " ".join(message.split())


# ----------------------------------------------------------------------------- value types
def integer(lo: int, hi: Optional[int] = None, what: str = "an integer", unit: str = "") -> Callable[[str], int]:
    """An argparse type: a decimal integer within [lo, hi] (``2**70`` or ``1e3`` are refused)."""
    span = (f" from {lo} to {hi}" if hi is not None else f" >= {lo}") + unit

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}{span}, but got '{text:.40}'") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}{span}, but got {text:.40}")
        return value

    return parse


def number(lo: float = -math.inf, hi: float = math.inf, what: str = "a finite number",
           open_lo: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float within [lo, hi] (``open_lo``: strictly above lo)."""
    if lo > -math.inf and hi < math.inf:
        span = f" from {lo:g} to {hi:g}"
    else:
        span = f" {'>' if open_lo else '>='} {lo:g}" if lo > -math.inf else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > lo if open_lo else value >= lo) and value <= hi):
            raise argparse.ArgumentTypeError(f"expected {what}{span}, but got '{text:.40}'")
        return value

    return parse


class LazyChoices:
    """A ``choices=`` container whose values are loaded on first use (a check or ``--help``),
    so that building the parser imports no heavy module just to name them."""

    def __init__(self, load: Callable[[], Iterable[str]]):
        self._load, self._values = load, None

    def _get(self) -> tuple:
        if self._values is None:
            self._values = tuple(self._load())
        return self._values

    def __iter__(self):
        return iter(self._get())

    def __contains__(self, value) -> bool:
        return value in self._get()

    def __len__(self) -> int:
        return len(self._get())


SEED = integer(0, SEED_MAX)
COUNT = integer(1, 1_000_000)  # things to do or run at once: samples, folds, trials, check inputs


# ----------------------------------------------------------------------------- shared groups
def add_list(p: argparse.ArgumentParser, *flags: str, **kw) -> argparse.Action:
    """A list flag in the one convention: space-separated values, repeatable (values add up)."""
    return p.add_argument(*flags, nargs="+", action="extend", **kw)


def parent(add: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """A parent parser (``parents=[...]``) holding the arguments ``add`` declares."""
    p = argparse.ArgumentParser(add_help=False)
    add(p)
    return p


def _run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR",
                   help="run folder (its checkpoints/best.ckpt, else its newest checkpoint) or a checkpoint file")


def _activation(p: argparse.ArgumentParser) -> None:
    from ..model.registry import ACTIVATIONS  # torch-free: no pydantic or torch just to parse

    names = tuple(ACTIVATIONS)
    p.add_argument("--activation", choices=names, metavar="NAME",
                   help=f"activation of an original-pipeline run that does not record it ({', '.join(names)})")


def _hdf5(p: argparse.ArgumentParser) -> None:
    add_list(p, "--hdf5", metavar="PATH", help="rollout file(s), folder(s) or glob(s)")


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (data/model/trainer sections); "
                                                    "default: built-in defaults")


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. trainer.lr=0.01")


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", metavar="DIR", help="folder for what the command writes (default: the run folder; "
                   "needed when it is read-only)")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_debug(p: argparse.ArgumentParser) -> None:
    """Accept ``--debug`` after the subcommand too."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")


GROUPS = {"run": _run, "activation": _activation, "hdf5": _hdf5, "config": _config, "overrides": _overrides,
          "outputs": _outputs, "json": _json, "debug": add_debug}


def groups(*names: str) -> list[argparse.ArgumentParser]:
    """Parent parsers of the named shared groups (each declared once, here; built afresh for
    each command, so no two parsers share an argparse action)."""
    return [parent(GROUPS[n]) for n in names]


def command(sub: argparse._SubParsersAction, name: str, *shared: str, **kw) -> argparse.ArgumentParser:
    """A subcommand parser with the named shared groups and ``--debug``; ``args.parser`` is set."""
    p = sub.add_parser(name, parents=groups(*shared, "debug"), **kw)
    p.set_defaults(parser=p)
    return p


def rename(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """Keep the old flag name ``old`` working as ``new`` (hidden), with a one-line note when used."""
    p.renamed = {**getattr(p, "renamed", {}), old: new}


# ----------------------------------------------------------------------------- checks before torch
def split_overrides(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Move ``KEY=VALUE`` items that a list flag swallowed (``--hdf5 f.h5 a.b=1``) to the overrides."""
    if not hasattr(args, "overrides") or not getattr(args, "hdf5", None):
        return
    moved = [h for h in args.hdf5 if OVERRIDE_RE.match(h) and not Path(h).exists()]
    if moved:
        args.hdf5 = [h for h in args.hdf5 if h not in moved]
        order = {a: i for i, a in reversed(list(enumerate(argv)))}
        args.overrides = sorted(moved + list(args.overrides), key=lambda a: order.get(a, len(argv)))


def check_overrides(items: Sequence[str]) -> None:
    """Every positional argument of a config command must be ``KEY=VALUE``."""
    for item in items:
        if "=" not in item:
            hint = " (a rollout file goes after --hdf5)" if Path(item).exists() else ""
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. trainer.max_epochs=200, but got no "
                              f"'='{hint}")


def check_paths(paths: Optional[Sequence[str]], flag: str = "--hdf5") -> None:
    """Each path exists (or, as a glob, matches something); the reader checks the rest."""
    for item in paths or []:
        p = Path(item).expanduser()
        if p.exists():
            continue
        if glob.has_magic(str(item)):
            if not glob.glob(str(p), recursive=True):
                raise DataFileNotFound(f"{flag} {item}: expected files matching this pattern, but got none")
            continue
        raise DataFileNotFound(f"{flag} {p.absolute()}: expected a rollout file or folder, but it does not exist")


def check_file(path: Optional[str], flag: str, what: str) -> None:
    """``path`` is an existing file (when given)."""
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.is_file():
        state = "it is a folder" if p.is_dir() else "it does not exist"
        raise DataFileNotFound(f"{flag} {p}: expected {what}, but {state}")


def check_folder(path: Optional[str], flag: str = "--output") -> None:
    """``path`` is a folder or does not exist yet (it is created)."""
    if path is not None and Path(path).expanduser().exists() and not Path(path).expanduser().is_dir():
        raise ConfigError(f"{flag} {path}: expected a folder (new or existing), but it is a file")


def check_run(path: Optional[str]) -> None:
    """``path`` is a run folder with a checkpoint, or a checkpoint file (the file is read on loading)."""
    from ..runs.folder import RunFolder

    if path is not None:
        RunFolder.at(Path(path).expanduser())


def load_config_args(args: argparse.Namespace, base: Sequence[str] = ()):
    """The validated config of ``--config`` (if the command has it) and the overrides, after ``base``."""
    from ..config import load_config

    check_overrides(args.overrides)
    return load_config(getattr(args, "config", None), [*base, *args.overrides])


def parse_assignments(items: Sequence[str], flag: str) -> dict[str, float]:
    """``NAME=VALUE`` items (``--fix``, ``--hold``) -> {name: value}; each name once."""
    out: dict[str, float] = {}
    for item in items:
        name, value = split_assignment(item, flag, "NAME=VALUE")
        if name in out:
            raise ConfigError(f"{flag} {name}: expected each input once, but got it twice")
        out[name] = parse_number(value, f"{flag} {name}")
    return out


def split_assignment(item: str, flag: str, form: str) -> tuple[str, str]:
    """``NAME=REST`` -> (NAME, REST); a missing '=' or name is an error showing ``form``."""
    name, sep, rest = item.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"{flag}: expected {form}, but got '{item}'")
    return name.strip(), rest.strip()


def parse_number(text: str, where: str) -> float:
    """A finite float, or a one-line error naming ``where``."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, but got '{text:.40}'") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, but got '{text:.40}'")
    return value
