"""The fast rollout reader: ``load_rollouts`` turns rollout files into a ``RolloutTable``.

Why it is fast: it uses h5py's low-level API (``h5o``/``h5a``/``h5d``) and per group touches
only what a table needs -- the ``success`` attribute, the requested output attributes and the
``param_state`` dataset -- never ``cycle_K`` subgroups or any other dataset (files with cycle
data are hundreds of MB). Big jobs are split into contiguous ranges of groups read by
separate processes; small jobs stay in this process, where a pool would cost more than it
saves. Each file's extracted rows are cached (see ``cache.py``).

Why it is strict: a successful group without a requested output, without ``param_state`` or
with non-finite values is a data problem; by default it is an error naming the file, the
group and the label (policy ``skip`` drops such rows and counts them instead). Every problem
with a file surfaces as one ``DataError`` line, never as an h5py traceback.
"""
from __future__ import annotations

import glob
import math
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

import h5py
import numpy as np
from h5py import h5a, h5d, h5f, h5g, h5o, h5p, h5s, h5t

from rollfit.data.cache import LoadSettings, RowCache
from rollfit.data.labels import (
    check_labels, missing_attr_message, resolve_inputs, resolve_outputs,
)
from rollfit.data.progress import LoadProgress
from rollfit.data.table import MAX_SKIPPED_SHOWN, RolloutTable
from rollfit.errors import ConfigError, DataError, DataFileNotFound, LoadInterrupted, listing

POLICIES = ("error", "skip")
PathLike = str | os.PathLike
# Reading costs ~70 us per group in one process; a pool of 2 forked workers costs ~0.05-0.1 s
# (measured on 2 cores). Below this many groups, reading here beats starting a pool.
PARALLEL_MIN_GROUPS = 5_000
# A chunk is at least this many groups (each chunk opens the file once), and there are about
# this many chunks per worker (several, so one slow chunk does not leave the others idle).
MIN_CHUNK_GROUPS = 2_000
CHUNKS_PER_WORKER = 3
MAX_PARAMETERS = 100_000
MAX_GROUP_INDEX = 2**63 - 1  # param_idx is stored as int64
PR_SET_PDEATHSIG = 1         # <linux/prctl.h>
PARENT_POLL_S = 0.5          # how often a reader checks that its parent is alive

T = TypeVar("T")
_GROUP_RE = re.compile(rb"^param_(\d+)(?:\.0)?$")
_F64 = h5t.NATIVE_DOUBLE
_F32 = h5t.NATIVE_FLOAT


# ----------------------------------------------------------------------------- paths
def expand_paths(path: PathLike | Sequence[PathLike]) -> list[Path]:
    """The rollout files a ``path`` argument means, in order, each once.

    A file; a folder holding ``rollout_data.h5`` (that file); any other folder (every
    ``*.h5``/``*.hdf5`` below it, sorted); a glob pattern; or a list of these.
    """
    try:
        items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    except TypeError:
        raise DataError(f"path: expected a file, folder, glob or a list of them, but got {path!r}") from None
    if not items:
        raise DataFileNotFound("path: expected at least one rollout file, folder or glob, but got none")
    files: list[Path] = []
    for item in items:
        files.extend(_expand_one(item))
    return _unique_files(files)


def _unique_files(files: list[Path]) -> list[Path]:
    """``files`` without repeats of one file: the same inode (a symlink or hard link) or the
    same resolved path (``./a/../f``) is loaded once, with one warning naming both spellings."""
    seen: dict[object, Path] = {}
    unique = []
    for f in files:
        try:
            st = os.stat(f)
            key: object = (st.st_dev, st.st_ino)
        except OSError:
            key = os.path.realpath(f)
        if key in seen:
            if os.fspath(seen[key]) != os.fspath(f):
                warnings.warn(f"{f}: expected each rollout file once, but got the same file as {seen[key]} "
                              "(a link or another spelling of its path); loading it once", UserWarning, stacklevel=3)
            continue
        seen[key] = f
        unique.append(f)
    return unique


def _expand_one(item: PathLike) -> list[Path]:
    """Files of one path argument (file, folder or glob)."""
    p = Path(item)
    if p.is_dir():
        if (p / "rollout_data.h5").is_file():
            return [p / "rollout_data.h5"]
        found = sorted(q for q in p.rglob("*") if q.suffix in (".h5", ".hdf5") and q.is_file())
        if not found:
            raise DataFileNotFound(f"{p}: expected .h5/.hdf5 rollout files in this folder, but got none")
        return found
    if p.exists():
        return [p]
    if glob.has_magic(str(item)):
        found = sorted(Path(q) for q in glob.glob(str(item), recursive=True) if Path(q).is_file())
        if not found:
            raise DataFileNotFound(f"{item}: expected files matching this pattern, but got none")
        return found
    raise DataFileNotFound(f"{p}: expected a rollout file or folder, but it does not exist")


# ----------------------------------------------------------------------------- files
def _describe(exc: BaseException) -> str:
    """An exception as one short line (HDF5 messages can be long)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextmanager
def open_file(path: Path, n_groups: int | None = None) -> Iterator[h5f.FileID]:
    """Open a rollout file read-only; closing it closes every object opened from it.

    With ``n_groups`` (param groups in the file), the HDF5 metadata cache is capped at what
    the root group's index needs (>= 4 MB): reading is as fast as with the default 32 MB,
    and closing, which frees every cached entry, is ~10x cheaper (~0.1 s per 10k groups).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataFileNotFound(f"{path}: expected a rollout file, but it does not exist") from None
    except OSError as exc:
        raise DataError(f"{path}: expected a readable file, but got {_describe(exc)}") from None
    if size == 0:
        raise DataError(f"{path}: expected an HDF5 file, but got an empty file (0 bytes)")
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5f.CLOSE_STRONG)
    if n_groups is not None:
        _cap_metadata_cache(fapl, n_groups)
    try:
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY, fapl=fapl)
    except Exception as exc:  # h5py raises OSError subclasses, sometimes others
        raise DataError(
            f"{path}: expected an HDF5 file, but got one HDF5 cannot open "
            f"(not HDF5, truncated or corrupt): {_describe(exc)}"
        ) from None
    try:
        yield fid
    finally:
        fid.close()


def _cap_metadata_cache(fapl: h5p.PropFAID, n_groups: int) -> None:
    """Limit the metadata cache to ~64 bytes per root link (its name heap and index), 4-32 MB."""
    config = fapl.get_mdc_config()
    config.max_size = min(32 << 20, max(4 << 20, 64 * n_groups))
    config.initial_size = min(config.initial_size, config.max_size)
    config.min_size = min(config.min_size, config.max_size)
    fapl.set_mdc_config(config)


@dataclass
class FileHeader:
    """What a file declares before its groups are read: parameter names and group names."""

    path: Path
    param_names: list[str]
    groups: list[bytes]       # param group names, sorted numerically
    param_idx: np.ndarray     # the N of each group, same order


def read_header(path: Path) -> FileHeader:
    """``parameter_names`` and the numerically sorted ``param_N`` group names of a file."""
    with open_file(path) as fid:
        try:
            names = _read_parameter_names(fid, path)
            groups = _list_param_groups(fid, path)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: expected a readable rollout file, but got {_describe(exc)}") from None
    if not groups:
        raise DataError(f"{path}: expected param_N groups at the root, but got none")
    idx = _group_indices(path, groups)
    return FileHeader(path, names, groups, idx)


def _group_indices(path: Path, groups: list[bytes]) -> np.ndarray:
    """The N of each ``param_N`` group: below ``MAX_GROUP_INDEX``, and each N named once
    (``param_3`` and ``param_3.0`` in one file would be the same group twice)."""
    digits = [_group_digits(g) for g in groups]
    for name, d in zip(groups, digits):
        if len(d) > 19 or int(d) > MAX_GROUP_INDEX:
            raise DataError(f"{path}: {name.decode()[:40]}: expected a group index of at most {MAX_GROUP_INDEX}, "
                            f"but got a {len(d)}-digit index")
    numbers = [int(d) for d in digits]
    for k in range(1, len(groups)):
        if numbers[k] == numbers[k - 1]:
            raise DataError(f"{path}: expected each group index once, but got {groups[k - 1].decode()} and "
                            f"{groups[k].decode()} (both group {numbers[k]}); remove or rename one")
    return np.array(numbers, dtype=np.int64)


def _read_parameter_names(fid: h5f.FileID, path: Path) -> list[str]:
    """The file's ``parameter_names`` as unique strings (vlen or fixed-length on disk)."""
    try:
        did = h5d.open(fid, b"parameter_names")
    except KeyError:
        raise DataError(f"{path}: expected a 'parameter_names' dataset at the root, but got none") from None
    count = did.get_space().get_simple_extent_npoints()
    if not 0 < count <= MAX_PARAMETERS:  # a damaged header can claim billions of entries
        raise DataError(f"{path}: expected 'parameter_names' with 1 to {MAX_PARAMETERS} entries, but got {count}")
    raw = h5py.Dataset(did)[()]
    if not isinstance(raw, np.ndarray) or raw.ndim != 1 or raw.dtype.kind not in "OSU" or raw.size == 0:
        raise DataError(f"{path}: expected 'parameter_names' to be a list of strings, but got {raw!r:.80}")
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw.tolist()]
    except UnicodeDecodeError:
        raise DataError(f"{path}: expected 'parameter_names' to be UTF-8 text, but got undecodable bytes") from None
    dupes = sorted(n for n, k in Counter(names).items() if k > 1)
    if dupes:
        raise DataError(f"{path}: expected unique parameter_names, but got {listing(dupes)} more than once")
    return names


def _list_param_groups(fid: h5f.FileID, path: Path) -> list[bytes]:
    """Root members named ``param_N`` / ``param_N.0``, sorted by N (param_10 after param_2).

    Other members named ``param_...`` (``param_3.5``, ``param_x``) are not groups of the
    format: they are skipped with one warning per file.
    """
    found: list[bytes] = []
    root = h5g.open(fid, b"/")  # keep a reference: ``links`` does not
    root.links.iterate(found.append)
    groups = [n for n in found if _GROUP_RE.match(n)]
    odd = [n.decode(errors="replace") for n in found if n.startswith(b"param_") and not _GROUP_RE.match(n)]
    if odd:
        warnings.warn(f"{path}: expected groups named param_N or param_N.0, but got {len(odd)} other "
                      f"member(s) named {listing(odd, limit=3)}; skipping them", UserWarning, stacklevel=3)
    groups.sort(key=lambda n: (len(_group_digits(n)), _group_digits(n), n))  # numeric order, no int() of huge N
    return groups


def _group_digits(name: bytes) -> bytes:
    """The digits of N in ``param_N``/``param_N.0``, without leading zeros ("0" for zero)."""
    return _GROUP_RE.match(name).group(1).lstrip(b"0") or b"0"


# ----------------------------------------------------------------------------- chunk reading
@dataclass
class ChunkTask:
    """A contiguous range of groups of one file, to be read by one process."""

    file_no: int
    path: Path
    file_groups: int          # param groups in the whole file (sizes the metadata cache)
    groups: list[bytes]
    param_idx: np.ndarray
    n_params: int
    cols: list[int]
    settings: LoadSettings


def read_chunk(task: ChunkTask) -> RolloutTable:
    """Read one chunk's groups into a one-file table (runs in a worker process or here)."""
    with open_file(task.path, task.file_groups) as fid:
        return _GroupReader(fid, task).run()


class _GroupReader:
    """Reads param groups of one open file; keeps per-chunk buffers and problem records."""

    def __init__(self, fid: h5f.FileID, task: ChunkTask) -> None:
        s = task.settings
        self.fid, self.task, self.file = fid, task, str(task.path)
        self.out_attr = [a.encode() for a in s.out_attr]
        n = len(task.groups)
        self.states = np.empty((n, task.n_params), np.float32)
        self.targets = np.empty((n, len(self.out_attr)), np.float32)
        self.status = np.zeros(n, np.int8)        # 0 kept, 1 failed, 2 skipped
        self.skipped: list[str] = []
        self.buf = np.empty((), np.float64)
        self.mspace = h5s.create_simple((task.n_params,))

    def run(self) -> RolloutTable:
        """Read every group of the chunk, apply the policies, return the kept rows."""
        for i, name in enumerate(self.task.groups):
            try:
                self.status[i] = self._group(i, name)
            except DataError:
                self._nonfinite(i)  # an earlier non-finite row is the first error in group order
                raise
            except Exception as exc:
                self._nonfinite(i)
                raise DataError(f"{self._where(name)}: expected a readable group, but got {_describe(exc)}") from None
        self._nonfinite(len(self.task.groups))
        return self._table()

    def _where(self, name: bytes) -> str:
        return f"{self.file}: {name.decode(errors='replace')}"

    def _group(self, i: int, name: bytes) -> int:
        """Read group ``name`` into row ``i``; 0 kept, 1 failed (success false), 2 skipped."""
        g = h5o.open(self.fid, name)
        if not isinstance(g, h5g.GroupID):
            raise DataError(f"{self._where(name)}: expected a group, but got another kind of object")
        if not self._success(g, name):
            return 1
        row = self.targets[i]
        for j, attr in enumerate(self.out_attr):
            try:
                a = h5a.open(g, attr)
            except KeyError:
                return self._problem(self._missing_attr(g, name, j))
            row[j] = self._scalar(a, name, attr)
        try:
            d = h5d.open(g, b"param_state")
        except KeyError:
            return self._problem(f"{self._where(name)}: expected a 'param_state' dataset, but the group has none")
        try:  # HDF5 checks that the file holds n_params values, the size of self.mspace
            d.read(self.mspace, h5s.ALL, self.states[i], _F32)
        except Exception:
            n = d.get_space().get_simple_extent_npoints()
            if n == self.task.n_params:
                raise
            return self._problem(f"{self._where(name)}: expected 'param_state' with {self.task.n_params} "
                                 f"values (one per parameter name), but got {n}")
        self._kept(g, name)
        return 0

    def _kept(self, g: h5g.GroupID, name: bytes) -> None:
        """Hook for subclasses that read more of each usable group (``inspect``)."""

    def _success(self, g: h5g.GroupID, name: bytes) -> bool:
        """The ``success`` attribute (bool, integer or 1-element array); absent means success.

        Boolean-like means a whole number, as C writers use it (0 false, any other true);
        NaN, inf or 0.5 is an error, never a success.
        """
        try:
            a = h5a.open(g, b"success")
        except KeyError:
            return True
        value = self._scalar(a, name, b"success")
        if not (math.isfinite(value) and value.is_integer()):
            raise DataError(f"{self._where(name)}: expected attribute 'success' to be true/false or a whole "
                            f"number, but got {value:g}")
        return value != 0

    def _scalar(self, a: h5a.AttrID, name: bytes, attr: bytes) -> float:
        """A numeric attribute holding exactly one value (scalar or 1-element array)."""
        n = a.get_space().get_simple_extent_npoints()
        if n != 1:
            raise DataError(f"{self._where(name)}: expected attribute '{attr.decode()}' to be one number, "
                            f"but got {n} values")
        try:
            a.read(self.buf, _F64)
        except Exception:
            kind = "a string" if a.dtype.kind in "OSU" else f"type {a.dtype}"
            raise DataError(f"{self._where(name)}: expected attribute '{attr.decode()}' to be a number, "
                            f"but got {kind}") from None
        return float(self.buf)

    def _missing_attr(self, g: h5g.GroupID, name: bytes, j: int) -> str:
        """Message for output ``j`` missing in a group, listing the group's attributes."""
        s = self.task.settings
        have: list[bytes] = []
        if len(self.skipped) < MAX_SKIPPED_SHOWN:  # listing is slow; only for messages shown
            h5a.iterate(g, lambda n, *_: have.append(n))
        return missing_attr_message(self._where(name), s.out_lbl[j], s.out_attr[j],
                                    [h.decode(errors="replace") for h in have])

    def _problem(self, message: str) -> int:
        """A successful group that cannot be used: raise (policy error) or record a skip."""
        if self.task.settings.on_missing == "error":
            raise DataError(message)
        if len(self.skipped) < MAX_SKIPPED_SHOWN:
            self.skipped.append(message)
        return 2

    def _nonfinite(self, upto: int) -> None:
        """Apply ``on_nonfinite`` to kept rows before ``upto`` whose inputs or targets are not finite."""
        kept = np.flatnonzero(self.status[:upto] == 0)
        x = self.states[kept][:, self.task.cols]
        y = self.targets[kept]
        bad = ~(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))
        for k in np.flatnonzero(bad):
            message = self._nonfinite_message(int(kept[k]), x[k], y[k])
            if self.task.settings.on_nonfinite == "error":
                raise DataError(message)
            self.status[kept[k]] = 2
            if len(self.skipped) < MAX_SKIPPED_SHOWN:
                self.skipped.append(message)

    def _nonfinite_message(self, i: int, x: np.ndarray, y: np.ndarray) -> str:
        """Names the first non-finite label of row ``i`` and its value."""
        s = self.task.settings
        labels = [(lbl, v) for lbl, v in zip(s.in_lbl, x)] + [(lbl, v) for lbl, v in zip(s.out_lbl, y)]
        lbl, v = next((lbl, v) for lbl, v in labels if not math.isfinite(v))
        return f"{self._where(self.task.groups[i])}: expected finite values, but got {v} for '{lbl}'"

    def _table(self) -> RolloutTable:
        """The kept rows as a one-file table (skip reasons already carry the file)."""
        keep = self.status == 0
        s = self.task.settings
        return RolloutTable(
            self.states[keep][:, self.task.cols], self.targets[keep], self.task.param_idx[keep],
            np.zeros(int(keep.sum()), np.int32), [self.file], list(s.in_lbl), list(s.out_lbl),
            list(s.out_attr), n_groups=len(keep), n_failed=int((self.status == 1).sum()),
            n_skipped=int((self.status == 2).sum()), skipped=self.skipped,
        )


# ----------------------------------------------------------------------------- planning
def _cpu_count() -> int:
    """CPUs this process may use (affinity-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_tasks(headers: Sequence[tuple[int, FileHeader, list[int]]], settings: LoadSettings,
               workers: int) -> tuple[list[ChunkTask], int]:
    """Chunks of the groups to read, and how many processes should read them.

    Small jobs (under ``PARALLEL_MIN_GROUPS``) or ``workers=1``: one chunk per file, read in
    this process. Otherwise about ``CHUNKS_PER_WORKER`` chunks per worker (big files split
    into group ranges), none under ``MIN_CHUNK_GROUPS``, and at most one worker per chunk.
    """
    total = sum(len(h.groups) for _, h, _ in headers)
    serial = workers <= 1 or total < PARALLEL_MIN_GROUPS
    size = max(total, 1) if serial else max(MIN_CHUNK_GROUPS, math.ceil(total / (workers * CHUNKS_PER_WORKER)))
    tasks = []
    for file_no, h, cols in headers:
        n = len(h.groups)
        bounds = np.linspace(0, n, max(1, math.ceil(n / size)) + 1).astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            tasks.append(ChunkTask(file_no, h.path, n, h.groups[lo:hi], h.param_idx[lo:hi],
                                   len(h.param_names), cols, settings))
    return tasks, 1 if serial else min(workers, len(tasks))


def _pool_context() -> multiprocessing.context.BaseContext:
    """How to start reader processes.

    ``fork`` on Linux when no other Python thread runs: instant, and it does not re-import the
    caller's ``__main__`` (scripts without ``if __name__ == '__main__':`` keep working); the
    children only use h5py/numpy, whose locks only Python threads could hold. Elsewhere
    ``forkserver`` (workers without the caller's threads), else ``spawn``.
    """
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])  # h5py/numpy imported once, in the server
        return ctx
    return multiprocessing.get_context("spawn")


def run_tasks(fn: Callable[[ChunkTask], T], tasks: list[ChunkTask], workers: int,
              progress: LoadProgress | None = None) -> list[T]:
    """``fn`` over every chunk, in ``workers`` processes (here if 1); results in task order.

    The first error in task (file, group) order is the one raised, whatever finished first.
    Reader processes die with this process (``_reader_init``); if this call is interrupted
    (SIGTERM, Ctrl-C), they are terminated before the exception goes on.
    """
    done = _progress_callback(tasks, progress)
    if workers <= 1 or multiprocessing.current_process().daemon:
        return [done(t, fn(t)) for t in tasks]
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(),
                               initializer=_reader_init, initargs=(os.getpid(),))
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns on any fork once BLAS threads exist
            warnings.filterwarnings("ignore", ".*fork.*", DeprecationWarning)
            futures: list[Future] = [pool.submit(fn, t) for t in tasks]
        for t, f in zip(tasks, futures):
            f.add_done_callback(lambda f, t=t: f.cancelled() or f.exception() or done(t, None))
        return [f.result() for f in futures]
    except BrokenProcessPool:
        raise DataError(
            f"{tasks[0].path}: expected reader processes to finish, but one died (a corrupt file, or a script "
            "that starts work on import without `if __name__ == '__main__':`); retry with workers=1"
        ) from None
    except BaseException:
        _terminate_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _progress_callback(tasks: list[ChunkTask], progress: LoadProgress | None) -> Callable[[ChunkTask, T], T]:
    """``done(task, result)``: report a finished chunk (and a finished file) to ``progress``."""
    left = Counter(t.file_no for t in tasks)
    lock = threading.Lock()

    def done(task: ChunkTask, result: T) -> T:
        if progress is not None:
            with lock:
                left[task.file_no] -= 1
                finished = int(left[task.file_no] == 0)
            progress.advance(len(task.groups), finished)
        return result

    return done


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM every reader process of ``pool`` (an interrupted load must not leave them reading)."""
    for proc in list(getattr(pool, "_processes", {}).values()):  # no public API lists them
        try:
            proc.terminate()
        except (OSError, ValueError):
            pass


def _reader_init(parent: int) -> None:
    """Runs first in each reader process: die with ``parent``, default signal handling.

    On Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` makes the kernel kill the reader when its
    parent dies (even by SIGKILL); everywhere a daemon thread also polls ``parent`` (the
    forkserver, not the caller, is the OS parent there) and exits when it is gone.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the loader's handler, inherited by fork
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C goes to the parent, which ends the pool
    _set_pdeathsig()
    if not _alive(parent):
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="rollfit-parent-watch", daemon=True).start()


def _set_pdeathsig() -> None:
    """Ask Linux to SIGKILL this process when its parent dies; elsewhere do nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    """True while process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(parent: int, period: float = PARENT_POLL_S) -> None:
    """Exit this reader at once when ``parent`` is gone (the portable part of dying with it)."""
    while _alive(parent):
        time.sleep(period)
    os._exit(1)


@contextmanager
def _sigterm_stops_loading(what: str) -> Iterator[None]:
    """Within the block, SIGTERM raises ``LoadInterrupted`` (one line, exit 143) instead of
    killing the process mid-load; only from the main thread and when no handler is set."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise LoadInterrupted(f"{what}: expected to finish loading, but got SIGTERM; stopped, nothing was written",
                              signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- public
def load_rollouts(
    path: PathLike | Sequence[PathLike],
    in_lbl: Sequence[str],
    out_lbl: Sequence[str],
    *,
    aliases: Mapping[str, str] | None = None,
    on_missing: str = "error",
    on_nonfinite: str = "error",
    cache: bool = True,
    cache_dir: PathLike | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> RolloutTable:
    """Load the successful rows of rollout files as a ``RolloutTable``.

    ``path``: a file, a folder (its ``rollout_data.h5``, else every .h5/.hdf5 below it), a
    glob, or a list of these (a file given twice, also through a link, is read once).
    ``in_lbl`` are ``parameter_names`` entries (columns of ``param_state``); ``out_lbl`` are
    attribute names or aliases (``cot_ma15``...; ``aliases`` adds or overrides).
    ``on_missing``/``on_nonfinite``: ``"error"`` raises a DataError naming file, group and
    label; ``"skip"`` drops the row and counts it. ``cache``/``cache_dir``: per-file cache of
    the extracted rows. ``workers``: reader processes (default: CPUs, at most one per chunk;
    small jobs are read in this process). ``progress``: a bar on stderr (None: when stderr is
    a terminal or the load takes over a second; False: never). SIGTERM during the load
    raises ``LoadInterrupted``.
    """
    settings = _settings(in_lbl, out_lbl, aliases, on_missing, on_nonfinite)
    workers = _check_workers(workers)
    files = expand_paths(path)
    with _sigterm_stops_loading(f"{files[0]}" + (f" (+{len(files) - 1} more files)" if len(files) > 1 else "")):
        store = RowCache.open(cache_dir) if cache else None
        keys = [store.key(f, settings) if store else None for f in files]  # stat before reading
        tables, names, todo = {}, {}, []
        for k, f in enumerate(files):
            hit = store.get(f, keys[k], settings) if store else None
            if hit is None:
                todo.append((k, read_header(f)))
                names[k] = todo[-1][1].param_names
            else:
                tables[k], names[k] = hit
        _check_same_names(files, names)
        with LoadProgress(sum(len(h.groups) for _, h in todo), len(todo), "loading rollouts", progress) as bar:
            for k, table in _read_files(todo, settings, workers, bar).items():
                tables[k] = table
                if store:
                    store.put(keys[k], table, names[k])
    table = RolloutTable.concat([tables[k] for k in range(len(files))])
    _check_rows(table, files)
    return table


def _read_files(todo: list[tuple[int, FileHeader]], settings: LoadSettings, workers: int,
                progress: LoadProgress | None = None) -> dict[int, RolloutTable]:
    """Read the groups of the files not served from the cache; one table per file number."""
    planned = [(k, h, resolve_inputs(settings.in_lbl, h.param_names, str(h.path))) for k, h in todo]
    tasks, n_proc = plan_tasks(planned, settings, workers)
    chunks = run_tasks(read_chunk, tasks, n_proc, progress)
    return {k: RolloutTable.concat([c for t, c in zip(tasks, chunks) if t.file_no == k]) for k, _ in todo}


def _settings(in_lbl: Sequence[str], out_lbl: Sequence[str], aliases: Mapping[str, str] | None,
              on_missing: str, on_nonfinite: str) -> LoadSettings:
    """Validated labels and policies, with output labels resolved to attribute names."""
    for key, value in (("on_missing", on_missing), ("on_nonfinite", on_nonfinite)):
        if value not in POLICIES:
            raise ConfigError(f"{key}: expected one of {listing(POLICIES)}, but got {value!r}")
    ins, outs = check_labels("in_lbl", in_lbl), check_labels("out_lbl", out_lbl)
    return LoadSettings(ins, outs, resolve_outputs(outs, aliases), on_missing, on_nonfinite)


def _check_workers(workers: int | None) -> int:
    """``workers`` as a positive int (default: the CPUs this process may use)."""
    if workers is None:
        return _cpu_count()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected a positive integer, but got {workers!r}")
    return workers


def _check_same_names(files: list[Path], names: dict[int, list[str]]) -> None:
    """All files must list the same parameter names (in any order; inputs are mapped by name)."""
    first = set(names[0])
    for k in range(1, len(files)):
        other = set(names[k])
        if other != first:
            only_a, only_b = sorted(first - other), sorted(other - first)
            raise DataError(
                f"{files[0]} and {files[k]}: expected the same parameter_names (in any order), but got "
                f"only in the first: {listing(only_a) or 'none'}; only in the second: {listing(only_b) or 'none'}"
            )


def _check_rows(table: RolloutTable, files: list[Path]) -> None:
    """At least one usable row, or a DataError saying why there is none."""
    if len(table):
        return
    where = str(files[0]) if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more files)"
    ok = table.n_groups - table.n_failed
    if ok == 0:
        raise DataError(f"{where}: expected at least one successful group, but all {table.n_groups} failed")
    raise DataError(f"{where}: expected at least one usable row, but all {ok} successful groups were "
                    f"skipped; first: {table.skipped[0] if table.skipped else '?'}")
