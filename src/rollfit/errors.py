"""Exception classes of rollfit.

Every error a user can cause is a ``RollfitError`` that also inherits the matching
builtin, so library users can catch ``ValueError``/``FileNotFoundError`` as usual while the
CLI turns any ``RollfitError`` into one line and a non-zero exit code.

One grammar for messages: ``<where>: <what was expected>, but got <what was found>[; <how
to fix / did you mean>]``. ``where`` names the file, group, label or config key.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Sequence


class RollfitError(Exception):
    """Base class of all errors rollfit raises on purpose."""

    exit_code = 2


class ConfigError(RollfitError, ValueError):
    """A configuration file, key, value or command-line override is wrong."""


class DataError(RollfitError, ValueError):
    """A rollout file or its contents cannot be used as asked."""


class DataFileNotFound(RollfitError, FileNotFoundError):
    """A rollout file, run folder or checkpoint does not exist."""


class CheckpointError(RollfitError, ValueError):
    """A checkpoint or run folder is incomplete, corrupt or incompatible."""


class TrainingError(RollfitError, RuntimeError):
    """Training cannot go on (divergence, interruption, disk trouble)."""


class OutputError(RollfitError, OSError):
    """An output file or folder cannot be written."""


class MissingDependency(RollfitError, ImportError):
    """An optional package is needed for this feature and is not installed."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates most similar to ``name``, best first (empty if none is close)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a close candidate exists, else ``""``."""
    best = closest(name, candidates, n=1)
    return f"; did you mean '{best[0]}'?" if best else ""


def listing(candidates: Sequence[str], name: str | None = None, limit: int = 12) -> str:
    """Candidates as a short quoted list, the closest to ``name`` first."""
    items = list(candidates)
    if name is not None:
        near = closest(name, items, n=len(items))
        items = near + [c for c in items if c not in near]
    shown = ", ".join(f"'{c}'" for c in items[:limit])
    more = len(items) - limit
    return shown + (f" (+{more} more)" if more > 0 else "")


def require_package(module: str, pip_name: str | None = None, feature: str = ""):
    """Import an optional package or raise ``MissingDependency`` with the exact pip hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {feature}" if feature else ""
        raise MissingDependency(
            f"package '{module}' is needed{what}, but it is not installed; "
            f"install it with: pip install {pip_name or module}"
        ) from exc


class LoadInterrupted(RollfitError, RuntimeError):
    """Loading rollout files was stopped by a signal (SIGTERM); nothing was written.

    The exit code is 128 + the signal number, as shells report a signal's death (143).
    """

    def __init__(self, message: str, signum: int = 15):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + int(signum)
