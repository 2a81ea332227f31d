"""The per-file row cache: hits, misses on change, damaged entries, location, failure to write."""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from rollfit.data import reader
from rollfit.data.cache import LoadSettings, RowCache, cache_root
from rollfit.data.reader import load_rollouts
from rollfit.data.synthetic import COT_ATTR, COT_STD_ATTR, write_rollout_file
from rollfit.data.table import RolloutTable

IN = ["gait_cadence", "gait_stride"]
OUT = ["cot_ma15"]


def _file(path: Path, n: int = 5, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.7, 1.3, (n, 13))
    return write_rollout_file(path, x, {COT_ATTR: scale * (60 + x[:, 0]), COT_STD_ATTR: x[:, 1]})


def _load(path, cache_dir, **kw) -> RolloutTable:
    return load_rollouts(path, IN, OUT, cache_dir=cache_dir, **kw)


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.npz"))


def _same(a: RolloutTable, b: RolloutTable) -> None:
    for field in ("inputs", "targets", "param_idx", "source"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.files, a.out_attr, a.n_groups, a.n_failed, a.n_skipped, a.skipped) == \
           (b.files, b.out_attr, b.n_groups, b.n_failed, b.n_skipped, b.skipped)


def test_second_load_is_a_hit(tmp_path, monkeypatch):
    path, cache = _file(tmp_path / "r.h5"), tmp_path / "cache"
    first = _load(path, cache)
    assert len(_entries(cache)) == 1
    monkeypatch.setattr(reader, "read_header", lambda *a: pytest.fail("file read on a cache hit"))
    _same(first, _load(path, cache))


def test_skips_are_cached_too(tmp_path, monkeypatch):
    path, cache = _file(tmp_path / "r.h5"), tmp_path / "cache"
    with h5py.File(path, "a") as f:
        del f["param_1"].attrs[COT_ATTR]
    first = _load(path, cache, on_missing="skip")
    monkeypatch.setattr(reader, "read_header", lambda *a: pytest.fail("file read on a cache hit"))
    second = _load(path, cache, on_missing="skip")
    _same(first, second)
    assert second.n_skipped == 1 and "param_1: expected attribute" in second.skipped[0]


def test_changed_file_misses(tmp_path):
    path, cache = _file(tmp_path / "r.h5"), tmp_path / "cache"
    first = _load(path, cache)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touch
    with pytest.MonkeyPatch.context() as m:
        calls = []
        real = reader.read_header
        m.setattr(reader, "read_header", lambda p: calls.append(p) or real(p))
        _same(first, _load(path, cache))
        assert calls == [path]
    _file(path, scale=2.0)  # rewritten with new content
    second = _load(path, cache)
    np.testing.assert_allclose(second.targets, 2 * first.targets, rtol=1e-6)
    assert len(_entries(cache)) == 1  # the entry was replaced, not added


@pytest.mark.parametrize("change", [dict(on_missing="skip"), dict(on_nonfinite="skip"),
                                    dict(aliases={"cot_ma15": COT_STD_ATTR})])
def test_other_settings_miss(tmp_path, change):
    path, cache = _file(tmp_path / "r.h5"), tmp_path / "cache"
    first = _load(path, cache)
    other = _load(path, cache, **change)
    assert len(_entries(cache)) == 2
    if "aliases" in change:
        assert other.out_attr == [COT_STD_ATTR] and not np.array_equal(other.targets, first.targets)


def test_labels_are_part_of_the_key(tmp_path):
    path, cache = _file(tmp_path / "r.h5"), tmp_path / "cache"
    a = _load(path, cache)
    b = load_rollouts(path, ["gait_stride"], OUT, cache_dir=cache)
    np.testing.assert_array_equal(b.inputs[:, 0], a.inputs[:, 1])
    assert len(_entries(cache)) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip", "foreign", "bad_shape"])
def test_damaged_entry_is_ignored_and_rebuilt(tmp_path, damage):
    path, cache = _file(tmp_path / "r.h5"), tmp_path / "cache"
    first = _load(path, cache)
    entry = _entries(cache)[0]
    data = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"not a zip at all")
    elif damage == "truncate":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        pos = data.index(b"inputs.npy") + 200  # inside the inputs member: its CRC no longer matches
        entry.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    elif damage == "foreign":
        np.savez(entry, key=np.array("someone else's"), inputs=np.zeros((5, 2), np.float32))
    elif damage == "bad_shape":
        with np.load(entry) as z:
            arrays = dict(z)
        arrays["inputs"] = arrays["inputs"][:3]
        np.savez(entry, **arrays)
    _same(first, _load(path, cache))
    with np.load(entry) as z:  # rebuilt, valid again
        assert z["inputs"].shape == (5, 2)


def test_cache_disabled_writes_nothing(tmp_path):
    path, cache = _file(tmp_path / "r.h5"), tmp_path / "cache"
    _load(path, cache, cache=False)
    assert not cache.exists()


def test_location_argument_env_and_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLFIT_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("ROLLFIT_CACHE_DIR")
    assert cache_root() == tmp_path / "xdg" / "rollfit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "rollfit"
    path = _file(tmp_path / "r.h5")
    monkeypatch.setenv("ROLLFIT_CACHE_DIR", str(tmp_path / "env"))
    load_rollouts(path, IN, OUT)
    assert len(_entries(tmp_path / "env")) == 1


def test_unwritable_cache_warns_once_and_loads(tmp_path):
    path = _file(tmp_path / "r.h5")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="expected a writable rollout cache folder") as record:
        a = _load(path, blocker / "cache")
        b = _load(path, blocker / "cache")
    assert len(record) == 1
    _same(a, b)


def test_failed_entry_write_warns_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path, cache = _file(tmp_path / "r.h5"), tmp_path / "cache2"

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.warns(RuntimeWarning, match="writing an entry failed"):
        t = _load(path, cache)
    assert len(t) == 5 and list(cache.iterdir()) == []


def test_cached_load_of_100k_rows_is_fast(tmp_path):
    path = _file(tmp_path / "r.h5")
    settings = LoadSettings(IN, OUT, [COT_ATTR], "error", "error")
    store = RowCache(tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    n = 100_000
    big = RolloutTable(np.ones((n, 2)), np.ones((n, 1)), np.arange(n), np.zeros(n), [str(path)], IN, OUT,
                       [COT_ATTR], n_groups=n + 10, n_failed=10)
    store.put(store.key(path, settings), big, ["gait_stride", "gait_cadence"])
    t0 = time.perf_counter()
    hit = store.get(path, store.key(path, settings), settings)
    elapsed = time.perf_counter() - t0
    assert hit is not None and len(hit[0]) == n
    assert elapsed < 0.5, elapsed
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = load_rollouts(path, IN, OUT, cache_dir=tmp_path / "cache")
    assert len(t) == n and time.perf_counter() - t0 < 0.5


def _rewrite_in_place(path: Path, new: Path) -> None:
    """Give ``path`` the bytes of ``new`` keeping its inode, size and atime/mtime (issue 15's stale case)."""
    st, data = path.stat(), new.read_bytes()
    assert len(data) == st.st_size
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_file_rewritten_in_place_with_size_mtime_and_inode_kept_misses(tmp_path):
    path, cache = _file(tmp_path / "r.h5"), tmp_path / "cache"
    first = _load(path, cache)
    _rewrite_in_place(path, _file(tmp_path / "other.h5", scale=2.0))
    second = _load(path, cache)
    np.testing.assert_allclose(second.targets, 2 * first.targets, rtol=1e-6)


def test_content_alone_changes_the_key(tmp_path, monkeypatch):
    """Even with every stat field equal (ctime restored by a clock change), new content misses."""
    from rollfit.data import cache as cache_mod

    path, other = _file(tmp_path / "r.h5"), _file(tmp_path / "other.h5", scale=2.0)
    settings = LoadSettings(IN, OUT, ["metabolic/cot/MA/mean"], "error", "error")
    frozen, store = os.stat(path), RowCache(tmp_path / "cache")
    with monkeypatch.context() as m:
        m.setattr(cache_mod.os, "stat", lambda p, *a, **k: frozen)
        before = store.key(path, settings)
    _rewrite_in_place(path, other)
    with monkeypatch.context() as m:
        m.setattr(cache_mod.os, "stat", lambda p, *a, **k: frozen)
        after = store.key(path, settings)
    assert before.entry == after.entry and before.text != after.text
    assert '"ctime_ns"' in after.text and '"content"' in after.text


def test_big_files_are_hashed_by_samples(tmp_path, monkeypatch):
    from rollfit.data import cache as cache_mod

    monkeypatch.setattr(cache_mod, "WHOLE_HASH_BYTES", 1 << 16)
    monkeypatch.setattr(cache_mod, "SAMPLE_BLOCK", 1 << 10)
    p = tmp_path / "big.bin"
    data = bytearray(os.urandom(1 << 20))
    p.write_bytes(data)
    d0 = cache_mod.content_digest(p, len(data))
    data[-1] ^= 1  # the last block is always sampled
    p.write_bytes(data)
    d1 = cache_mod.content_digest(p, len(data))
    data[0] ^= 1
    p.write_bytes(data)
    assert len({d0, d1, cache_mod.content_digest(p, len(data))}) == 3
