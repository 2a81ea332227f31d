"""Graceful interruption: SIGINT/SIGTERM end a run at the next epoch boundary.

``InterruptGuard`` is a context manager around the training loop. The first SIGINT or
SIGTERM only sets ``requested``: the loop finishes the current epoch (so the optimizer
step in flight completes), writes a checkpoint, flushes the log and raises
``TrainingInterrupted``, whose message says how to resume. A second signal raises
``KeyboardInterrupt`` at once; every file rollfit writes is written atomically
(``rollfit.io``), so aborting mid-write leaves the previous file, never a partial one.

Why an epoch boundary: a checkpoint taken there resumes bit-identically (the shuffling
permutation is drawn once per epoch), and epochs over resident tensors are short.
Handlers can only be installed from the main thread; elsewhere the guard does nothing
and signals keep their default behaviour.
"""
from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Optional

from ..errors import TrainingError

HANDLED = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells report


class TrainingInterrupted(TrainingError):
    """A run stopped on SIGINT/SIGTERM after writing a resumable checkpoint."""

    def __init__(self, message: str, signum: int, epoch: int, checkpoint: Optional[Path]):
        super().__init__(message)
        self.signum, self.epoch, self.checkpoint = signum, epoch, checkpoint
        self.exit_code = EXIT_CODES.get(signum, 128 + int(signum))


def resume_command(run_dir: str | Path) -> str:
    """The shell command that continues the run in ``run_dir``."""
    return f"rollfit train --resume {shlex.quote(str(Path(run_dir).resolve()))}"


def signal_name(signum: int) -> str:
    """``SIGINT`` for 2, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class InterruptGuard:
    """Turn the first SIGINT/SIGTERM into a flag; a second one aborts at once."""

    def __init__(self, announce: bool = True):
        self.requested: Optional[int] = None
        self.announce = announce
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            for s in HANDLED:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt(f"second {signal_name(signum)}: aborted")
        self.requested = signum
        if self.announce:
            print(f"\nrollfit: {signal_name(signum)} received; finishing the current epoch and writing a "
                  f"checkpoint (press Ctrl-C again to abort at once)", file=sys.stderr, flush=True)
