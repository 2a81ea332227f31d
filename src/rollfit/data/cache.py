"""Per-file cache of extracted rows, so a second load of the same files takes milliseconds.

One ``.npz`` entry per (file, labels, policies). The entry name hashes the absolute path and
the load settings; inside, the entry stores its full key, including the file's size,
``mtime_ns``, ``ctime_ns``, inode and a hash of sampled content (``content_digest``), and is
used only if that key matches exactly -- a changed file misses, even one rewritten in place
with its size, mtime and inode kept (``os.utime`` cannot set ctime). A damaged or foreign entry is ignored and rebuilt, never trusted. Entries are written
atomically (temporary file in the same folder, flush, fsync, ``os.replace``). A cache folder
that cannot be written gives one warning and the load goes on without the cache.

Location: the ``cache_dir`` argument, else ``$ROLLFIT_CACHE_DIR``, else
``$XDG_CACHE_HOME/rollfit``, else ``~/.cache/rollfit``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rollfit.data.table import RolloutTable

CACHE_FORMAT_VERSION = 2
# content_digest: files up to this size are hashed whole; larger ones by head, tail and blocks.
WHOLE_HASH_BYTES = 4 << 20
SAMPLE_BLOCK = 64 << 10
SAMPLE_BLOCKS = 32
_warned: set[str] = set()


@dataclass(frozen=True)
class LoadSettings:
    """Everything besides the file that decides which rows a load extracts."""

    in_lbl: list[str]
    out_lbl: list[str]
    out_attr: list[str]
    on_missing: str
    on_nonfinite: str


@dataclass(frozen=True)
class CacheKey:
    """Where an entry lives and the exact key its content must carry to be trusted."""

    entry: Path
    text: str


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: argument, ``$ROLLFIT_CACHE_DIR``, ``$XDG_CACHE_HOME/rollfit``, ``~/.cache/rollfit``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("ROLLFIT_CACHE_DIR"):
        return Path(os.environ["ROLLFIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rollfit"


def _warn_once(root: Path, what: str, exc: BaseException) -> None:
    """One warning per cache folder and process: the load goes on uncached."""
    if str(root) not in _warned:
        _warned.add(str(root))
        warnings.warn(f"{root}: expected a writable rollout cache folder, but {what} failed ({exc}); "
                      "loading without the cache", RuntimeWarning, stacklevel=4)


class RowCache:
    """Reads and writes cache entries of one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, cache_dir: str | os.PathLike | None = None) -> "RowCache | None":
        """The cache at ``cache_root(cache_dir)``, created if needed; None (and a warning) if impossible."""
        root = cache_root(cache_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _warn_once(root, "creating it", exc)
            return None
        return cls(root)

    def key(self, path: Path, settings: LoadSettings) -> CacheKey | None:
        """The key of ``path`` as it is now on disk (None if it cannot be stat'ed)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        ident = {"version": CACHE_FORMAT_VERSION, "path": os.path.abspath(path), **asdict(settings)}
        name = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
        try:
            digest = content_digest(path, st.st_size)
        except OSError:
            return None
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
                 "dev": st.st_dev, "content": digest}
        return CacheKey(self.root / f"{name}.npz", json.dumps({**ident, **stamp}, sort_keys=True))

    def get(self, path: Path, key: CacheKey | None, settings: LoadSettings) -> tuple[RolloutTable, list[str]] | None:
        """The cached one-file table and parameter names, or None on a miss or damaged entry."""
        if key is None or not key.entry.is_file():
            return None
        try:
            with np.load(key.entry, allow_pickle=False) as z:
                if str(z["key"]) != key.text:
                    return None
                return _table_from(z, path, settings), [str(n) for n in z["param_names"]]
        except Exception:  # damaged, truncated or foreign entry: rebuild it, never trust it
            return None

    def put(self, key: CacheKey | None, table: RolloutTable, param_names: list[str]) -> None:
        """Write an entry atomically; on failure warn once and go on."""
        if key is None:
            return
        arrays = {
            "key": np.array(key.text), "param_names": np.array(param_names, dtype=str),
            "inputs": table.inputs, "targets": table.targets, "param_idx": table.param_idx,
            "counts": np.array([table.n_groups, table.n_failed, table.n_skipped], np.int64),
            "skipped": np.array(table.skipped, dtype=str),
        }
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, key.entry)
        except OSError as exc:
            _warn_once(self.root, "writing an entry", exc)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def content_digest(path: Path, size: int) -> str:
    """A cheap hash of what a load depends on: the whole file up to ``WHOLE_HASH_BYTES``, else
    ``SAMPLE_BLOCKS`` evenly spaced blocks of ``SAMPLE_BLOCK`` bytes, the first and last included
    (HDF5 keeps its superblock and root index there). At most ~2 MB read, ~1 ms per MB."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if size <= WHOLE_HASH_BYTES:
            h.update(fh.read())
            return h.hexdigest()
        last = size - SAMPLE_BLOCK
        for k in range(SAMPLE_BLOCKS):
            fh.seek(last * k // (SAMPLE_BLOCKS - 1))
            h.update(fh.read(SAMPLE_BLOCK))
    return h.hexdigest()


def _table_from(z: "np.lib.npyio.NpzFile", path: Path, settings: LoadSettings) -> RolloutTable:
    """Rebuild a one-file table from an entry, checking shapes so a bad entry cannot pass."""
    x, y, idx = z["inputs"], z["targets"], z["param_idx"]
    counts = [int(c) for c in z["counts"]]
    n = len(idx)
    if (x.shape != (n, len(settings.in_lbl)) or y.shape != (n, len(settings.out_lbl))
            or x.dtype != np.float32 or y.dtype != np.float32 or idx.dtype != np.int64
            or len(counts) != 3 or counts[0] != n + counts[1] + counts[2]):
        raise ValueError("inconsistent cache entry")
    return RolloutTable(
        x, y, idx, np.zeros(n, np.int32), [str(path)], list(settings.in_lbl), list(settings.out_lbl),
        list(settings.out_attr), n_groups=counts[0], n_failed=counts[1], n_skipped=counts[2],
        skipped=[str(s) for s in z["skipped"]],
    )
