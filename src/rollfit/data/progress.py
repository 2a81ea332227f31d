"""Loading progress on stderr: files done, groups per second and ETA, with tqdm.

Shown only when it helps: at once when stderr is a terminal, otherwise only once a load has
taken more than ``DELAY_S`` (tqdm's ``delay``), so quick loads and test runs print nothing.
``enabled=False`` (the loaders' ``progress=False``) or ``ROLLFIT_PROGRESS=0`` turn it off.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Optional

DELAY_S = 1.0


class LoadProgress:
    """A thread-safe counter of groups and files read, drawn as one tqdm bar on stderr."""

    def __init__(self, total_groups: int, total_files: int, what: str = "loading",
                 enabled: Optional[bool] = None) -> None:
        self.files_total, self.files_done = total_files, 0
        self._lock = threading.Lock()
        self._bar = None
        if enabled is None:
            enabled = os.environ.get("ROLLFIT_PROGRESS", "1") not in ("0", "false", "no", "off")
        if enabled and total_groups > 0:
            from tqdm.auto import tqdm

            tty = getattr(sys.stderr, "isatty", lambda: False)()
            self._bar = tqdm(total=total_groups, desc=what, unit=" groups", file=sys.stderr, leave=not tty,
                             delay=0 if tty else DELAY_S, mininterval=0.2 if tty else 5.0, dynamic_ncols=True)
            self._bar.set_postfix_str(f"files 0/{total_files}", refresh=False)

    def advance(self, groups: int, files: int = 0) -> None:
        """``groups`` more groups read, ``files`` more files complete (safe from any thread)."""
        if self._bar is None:
            return
        with self._lock:
            self.files_done += files
            self._bar.set_postfix_str(f"files {self.files_done}/{self.files_total}", refresh=False)
            self._bar.update(groups)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "LoadProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
