"""Loading speed: rollfit's reader against a one-process low-level h5py loop.

    python benchmarks/bench_load.py [--groups 100000] [--files 10] [--data DIR] [--repeat 1]

Generates (once; reused on later runs) a file of ``--groups`` groups and a folder of
``--files`` run folders holding the same groups, then measures in this one run, for each:

- ``h5py loop (1 proc)``: the baseline of REFERENCE.md -- iterate the groups, read
  ``success``, the outcome attribute and ``param_state`` with ``h5o``/``h5a``/``h5d``;
- ``rollfit cold``: ``load_rollouts(cache=False)`` (parallel reader processes);
- ``rollfit cold+write``: first load into an empty cache (reads and writes the cache);
- ``rollfit cached``: the same load again (served from the cache).

Files are read once before timing, so every method sees a warm OS page cache.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from h5py import h5a, h5d, h5f, h5g, h5o, h5s

from rollfit.data.reader import _cpu_count, expand_paths, load_rollouts
from rollfit.data.synthetic import COT_ATTR, campaign_rows, make_campaign, write_rollout_file

IN = ["gait_cadence", "gait_stride"]
OUT = ["cot_ma15"]


def generate(root: Path, n_groups: int, n_files: int) -> tuple[Path, Path]:
    """The single file and the campaign folder, written unless a finished set is there."""
    single, campaign, done = root / "single" / "rollout_data.h5", root / "campaign", root / "DONE"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        x, y, ok = campaign_rows(n_groups, seed=0)
        write_rollout_file(single, x, {COT_ATTR: y}, ok)
        make_campaign(campaign, n_groups, n_files, seed=0)
        done.write_text("ok\n")
        print(f"generated {n_groups} groups twice in {time.perf_counter() - t0:.0f} s under {root}")
    return single, campaign


def h5py_loop(files: list[Path]) -> int:
    """The baseline: one process, low-level API, one pass, rows collected in Python lists."""
    xs, ys = [], []
    for path in files:
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY)
        pn = h5d.open(fid, b"parameter_names")
        names = np.empty(pn.shape, pn.dtype)
        pn.read(h5s.ALL, h5s.ALL, names)
        cols = [[n.decode() if isinstance(n, bytes) else n for n in names].index(lbl) for lbl in IN]
        root = h5g.open(fid, b"/")
        groups = sorted((n for n in root if re.match(rb"param_\d+", n)), key=lambda n: int(n[6:].split(b".")[0]))
        for name in groups:
            g = h5o.open(fid, name)
            if h5a.exists(g, b"success"):
                a = h5a.open(g, b"success")
                ok = np.empty(a.shape, a.dtype)
                a.read(ok)
                if not ok.ravel()[0]:
                    continue
            a = h5a.open(g, COT_ATTR.encode())
            y = np.empty(a.shape, a.dtype)
            a.read(y)
            d = h5d.open(g, b"param_state")
            state = np.empty(d.shape, np.float32)
            d.read(h5s.ALL, h5s.ALL, state)
            xs.append(state[cols])
            ys.append(float(y.ravel()[0]))
        fid.close()
    return len(xs)


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its reaped children so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], int], repeat: int) -> tuple[float, float, int]:
    """Best wall time and best CPU time (all processes) of ``repeat`` calls, and the row count.

    CPU time barely depends on what else the machine runs; wall time does.
    """
    wall, cpu, rows = float("inf"), float("inf"), 0
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu_seconds()
        rows = fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, _cpu_seconds() - c0)
    return wall, cpu, rows


def measure(label: str, path: Path, repeat: int) -> list[tuple[str, str, float, float, int]]:
    """All methods on one data set; rows (data set, method, wall s, CPU s, rows)."""
    files = expand_paths(path)
    for f in files:  # warm the OS page cache for every method alike
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    cache = Path(tempfile.mkdtemp(prefix="rollfit_bench_cache_"))
    try:
        def load(**kw) -> int:
            return len(load_rollouts(path, IN, OUT, **kw))

        def cold_write() -> int:
            shutil.rmtree(cache, ignore_errors=True)
            return load(cache_dir=cache)

        runs = [("h5py loop (1 proc)", lambda: h5py_loop(files)),
                ("rollfit cold", lambda: load(cache=False)),
                ("rollfit cold+write", cold_write),
                ("rollfit cached", lambda: load(cache_dir=cache))]
        return [(label, name, *timed(fn, repeat)) for name, fn in runs]
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=100_000, help="param groups per data set (default: %(default)s)")
    p.add_argument("--files", type=int, default=10, help="files of the folder data set (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None, help="where generated data lives (default: a temp folder)")
    p.add_argument("--repeat", type=int, default=1, help="timed calls per method, best kept (default: %(default)s)")
    args = p.parse_args(argv)
    root = args.data or Path(tempfile.gettempdir()) / f"rollfit_bench_load_{args.groups}_{args.files}"
    single, campaign = generate(root, args.groups, args.files)
    rows = measure("1 file", single, args.repeat) + measure(f"{args.files} files", campaign, args.repeat)
    print(f"\n{platform.machine()}, {_cpu_count()} CPUs usable, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'data set':<10} {'method':<20} {'wall s':>8} {'CPU s':>8} {'rows':>7} {'wall vs loop':>13}")
    base = {label: wall for label, name, wall, _, _ in rows if name.startswith("h5py")}
    for label, name, wall, cpu, n in rows:
        print(f"{label:<10} {name:<20} {wall:>8.3f} {cpu:>8.3f} {n:>7} {base[label] / wall:>12.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
