"""``RunLock``: one process writes a run folder at a time.

The lock is an exclusive ``flock`` on ``<run>/rollfit.lock``, which holds the owner's pid.
The kernel releases a ``flock`` when its process dies, so the lock of a killed run (a stale
file naming a dead pid) is simply taken over; a live holder makes the second writer fail at
once with a one-line error naming the holder's pid. Where ``fcntl`` is missing (Windows)
the file only records the writer's pid and does not exclude a second one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import OutputError
from ..io import _describe_os_error as describe_os_error

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None


def _read_pid(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class RunLock:
    """Context manager holding ``path`` for this process; ``acquire``/``release`` by hand too."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: Optional[int] = None

    def _busy(self) -> OutputError:
        pid = _read_pid(self.path)
        holder = f"pid {pid}" if pid is not None else "another process"
        return OutputError(f"{self.path.parent}: expected a run folder no other process is writing, but it is locked "
                           f"by {holder} ({self.path.name}); wait for that run to end or use another --output")

    def acquire(self) -> "RunLock":
        """Take the lock or raise ``OutputError`` naming the holder's pid (never waits)."""
        try:
            return self._acquire()
        except OutputError:
            raise
        except OSError as exc:  # the run folder cannot be made (name it), or the lock file not written
            where = self.path if self.path.parent.is_dir() else self.path.parent
            raise OutputError(describe_os_error(where, exc)) from None

    def _acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # the file can be replaced between open and lock: check and retry
            fd = self._try_open()
            if fd is None:
                raise self._busy()
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)
        raise self._busy()

    def _try_open(self) -> Optional[int]:
        """An open, locked descriptor of the lock file, or None when a live process holds it."""
        # O_NOFOLLOW: a lock file that is a symlink (a received run folder) is refused (ELOOP),
        # never truncated and written through to the file it names
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        if fcntl is None:  # pragma: no cover - no flock here: the pid file only names the writer
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def release(self) -> None:
        """Remove the lock file and let go of the lock."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
