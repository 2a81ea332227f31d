"""``--nproc`` workers report to their launcher through a status folder, not through torchrun.

A worker that exits non-zero makes torchrun print a traceback, so a worker of ``rollfit
train --nproc N`` writes its exit code and its error line into the folder named by
``ROLLFIT_NPROC_STATUS`` and exits 0; the launcher prints each distinct error line once and
exits with the first non-zero code (130/143 when it was sent a signal itself).
"""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

STATUS_ENV = "ROLLFIT_NPROC_STATUS"


def worker_folder() -> Optional[Path]:
    """The launcher's status folder when this process is one of its workers, else None."""
    status = os.environ.get(STATUS_ENV)
    return Path(status) if status and "RANK" in os.environ else None


def report_error(line: str) -> None:
    """An error line: on stderr, or for the launcher to print (once, however many ranks failed)."""
    folder = worker_folder()
    if folder is None:
        print(line, file=sys.stderr)
    else:
        (folder / f"rank_{os.environ['RANK']}.err").write_text(line + "\n")


def worker_exit(code: int) -> int:
    """This process's exit code: ``code``, or 0 in a worker, after leaving ``code`` for the launcher."""
    folder = worker_folder()
    if folder is None:
        return code
    (folder / f"rank_{os.environ['RANK']}.code").write_text(str(code))
    return 0


@contextmanager
def status_folder() -> Iterator[Path]:
    """The launcher's side: a fresh status folder, named in the environment the workers inherit."""
    before = os.environ.get(STATUS_ENV)
    with tempfile.TemporaryDirectory(prefix="rollfit-nproc-") as folder:
        os.environ[STATUS_ENV] = folder
        try:
            yield Path(folder)
        finally:
            if before is None:
                os.environ.pop(STATUS_ENV, None)
            else:
                os.environ[STATUS_ENV] = before


def outcome(folder: Path) -> tuple[list[str], int]:
    """The workers' distinct error lines (rank order) and their first non-zero exit code."""
    def by_rank(p: Path) -> int:
        return int(p.name.split("_")[1].split(".")[0])

    lines = [p.read_text().strip() for p in sorted(folder.glob("rank_*.err"), key=by_rank)]
    codes = [int(p.read_text() or 0) for p in sorted(folder.glob("rank_*.code"), key=by_rank)]
    return list(dict.fromkeys(lines)), next((c for c in codes if c), 0)
