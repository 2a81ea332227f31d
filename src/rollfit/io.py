"""Atomic file writes: a reader never sees a partial file, whenever the process dies.

Each writer writes to a temporary file in the destination folder, flushes and fsyncs it,
then renames it over the destination (``os.replace`` is atomic on POSIX within one file
system) and fsyncs the folder. On any failure the temporary file is removed and the
previous file, if any, is left intact.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from .errors import OutputError


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe_os_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{path}: could not write, the disk is full; free space and run again (the previous file is intact)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: could not write, the folder is not writable ({exc.strerror})"
    return f"{path}: could not write ({exc.strerror or exc})"


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success rename it into place."""
    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise OutputError(_describe_os_error(dest, exc)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(_describe_os_error(dest, exc)) from None
        raise
    _fsync_dir(dest.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_write_with(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Let ``writer(fh)`` fill a binary file that appears at ``path`` only when complete."""
    with atomic_open(path, "wb") as fh:
        writer(fh)


def check_writable(folder: str | Path) -> None:
    """Fail early, before training, when ``folder`` cannot be created or written."""
    f = Path(folder)
    try:
        f.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rollfit-probe.", dir=f)
        os.write(fd, b"probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(_describe_os_error(f, exc)) from None
