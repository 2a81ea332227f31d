"""Graceful interruption: SIGINT/SIGTERM end a run at the next epoch boundary.

The first signal only sets ``InterruptGuard.requested``: the loop finishes the epoch, writes
a checkpoint and raises ``TrainingInterrupted``, whose message says how to resume. A second
one raises ``KeyboardInterrupt`` at once (files are written atomically, so none is left
partial). An epoch boundary because a checkpoint there resumes bit-identically (one
permutation per epoch). Outside the main thread the guard does nothing.
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


class TrainingInterrupted(TrainingError):
    """A run stopped on SIGINT/SIGTERM after writing a resumable checkpoint."""

    def __init__(self, message: str, signum: int, epoch: int, checkpoint: Optional[Path]):
        super().__init__(message)
        self.signum, self.epoch, self.checkpoint = signum, epoch, checkpoint
        self.exit_code = 128 + int(signum)  # 130, 143: as shells report


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
        self.announce = announce  # one notice per run: under torchrun only the writing rank says it
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
