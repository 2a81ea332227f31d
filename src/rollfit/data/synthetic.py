"""Writers of rollout files in the real on-disk format (see FORMAT.md in the project docs).

Tests, the demo and the benchmarks all need rollout files whose content is known exactly.
These writers produce both flavours found in the wild:

- ``style="h5py"``: variable-length string ``parameter_names``, groups ``param_N``, a
  ``numpy.bool_`` ``success`` attribute and float32 scalar outcome attributes;
- ``style="cstyle"``: fixed-length ``|S32`` names, groups ``param_N.0``, a 1-element uint8
  ``success`` and 1-element float64 outcome attributes (what C/C++ writers produce).

Failed rollouts carry ``error='empty_data'``, no outcome attributes and (by default in the
C style) no ``param_state``, as real files do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import h5py
import numpy as np

DEFAULT_13_NAMES: tuple[str, ...] = (
    "gait_stride", "gait_cadence", "skeleton_global", "skeleton_FemurL", "skeleton_FemurR",
    "skeleton_TibiaL", "skeleton_TibiaR", "muscle_strength", "muscle_contracture",
    "torso_mass", "ankle_stiffness", "knee_stiffness", "hip_stiffness",
)
COT_ATTR = "metabolic/cot/MA/mean"
COT_STD_ATTR = "metabolic/cot/MA/std"
STYLES = ("h5py", "cstyle")

# The demo's cost surface: a smooth bowl over (stride, cadence) with a known minimum.
DEMO_OPT_STRIDE = 1.05
DEMO_OPT_CADENCE = 0.95
DEMO_MIN_COT = 55.0


def true_cot(stride: np.ndarray | float, cadence: np.ndarray | float) -> np.ndarray:
    """Noise-free cost of transport of the demo: minimum 55 at (1.05, 0.95), 55-75 on [0.7, 1.3]^2.

    A tilted quadratic bowl, so the optimum is unique and off-centre (a fit that merely
    returns the grid centre is wrong) and both inputs matter. Its Hessian is
    [[190, 40], [40, 150]] in (stride, cadence); the optimizer's tests rely on it.
    """
    ds = np.asarray(stride, dtype=np.float64) - DEMO_OPT_STRIDE
    dc = np.asarray(cadence, dtype=np.float64) - DEMO_OPT_CADENCE
    return DEMO_MIN_COT + 95.0 * ds**2 + 75.0 * dc**2 + 40.0 * ds * dc


def _group_name(index: int, style: str) -> str:
    """``param_N`` or, for C-style writers, ``param_N.0``."""
    return f"param_{index}.0" if style == "cstyle" else f"param_{index}"


def _write_root(f: h5py.File, names: Sequence[str], success: np.ndarray, style: str) -> None:
    """Root attributes, ``metadata`` group and ``parameter_names`` as the real writers do."""
    f.attrs["total_samples"] = np.int64(len(success))
    f.attrs["failed_samples"] = np.int64(int((~success).sum()))
    f.attrs["success_samples"] = np.int64(int(success.sum()))
    meta = f.create_group("metadata")
    meta.attrs["checkpoint_path"] = "ray_results/synthetic-000000"
    meta.attrs["commit_hash"] = "0000synth"
    meta.attrs["param_file"] = "synthetic"
    meta.attrs["rollout_time"] = "1970-01-01T00:00:00"
    meta.create_dataset("record_config", data="synthetic: true", dtype=h5py.string_dtype())
    if style == "cstyle":
        f.create_dataset("parameter_names", data=np.array([n.encode() for n in names], dtype="S32"))
    else:
        f.create_dataset("parameter_names", data=list(names), dtype=h5py.string_dtype())


def _write_cycles(g: h5py.Group, value: float, n_cycles: int, cycle_shape: tuple[int, int]) -> None:
    """Per-cycle subgroups with bulky gzip datasets that a loader must never read."""
    for k in range(n_cycles):
        c = g.create_group(f"cycle_{k}")
        c.attrs["cycle_idx"] = np.int64(k)
        c.attrs["metabolic/cot/MA"] = np.float32(value)
        data = np.random.default_rng(k).normal(size=cycle_shape).astype(np.float32)
        c.create_dataset("data", data=data, compression="gzip", chunks=(max(1, cycle_shape[0] // 2), cycle_shape[1]))


def _outcome(value: float, style: str) -> np.ndarray | np.float32:
    """An outcome attribute value in the writer's flavour."""
    return np.array([value], dtype=np.float64) if style == "cstyle" else np.float32(value)


def _success_attr(ok: bool, style: str) -> np.ndarray | np.bool_:
    """A ``success`` attribute value in the writer's flavour."""
    return np.array([1 if ok else 0], dtype=np.uint8) if style == "cstyle" else np.bool_(ok)


def _write_group(
    f: h5py.File, name: str, index: int, ok: bool, state: np.ndarray,
    outs: Mapping[str, float], style: str, missing_success: bool, failed_state: bool,
) -> h5py.Group:
    """One ``param_N`` group; failed ones get ``error='empty_data'`` and no outcomes."""
    g = f.create_group(name)
    g.attrs["param_idx"] = np.int64(index)
    g.attrs["num_steps"] = np.int64(2700 if ok else 0)
    if not missing_success:
        g.attrs["success"] = _success_attr(ok, style)
    if ok:
        g.attrs["character_mass"] = np.float32(72.9)
        for attr, value in outs.items():
            g.attrs[attr] = _outcome(value, style)
    else:
        g.attrs["error"] = "empty_data"
    if ok or failed_state:
        g.create_dataset("param_state", data=state.astype(np.float32), compression="gzip", chunks=state.shape)
    return g


def write_rollout_file(
    path: str | os.PathLike,
    inputs: np.ndarray | None,
    outputs: Mapping[str, np.ndarray],
    success: np.ndarray | None = None,
    *,
    style: str = "h5py",
    param_names: Sequence[str] = DEFAULT_13_NAMES,
    with_cycles: bool = False,
    n_cycles: int = 2,
    cycle_shape: tuple[int, int] = (90, 40),
    missing_success: bool = False,
    failed_state: bool | None = None,
    start_index: int = 0,
    indices: Sequence[int] | None = None,
) -> Path:
    """Write a rollout file in the real format and return its path.

    ``inputs`` is (N, len(param_names)) or None (every parameter 1.0); ``outputs`` maps an
    attribute name to N values; ``success`` is N booleans (default all true). Group ``i`` is
    named after ``indices[i]`` if given, else ``start_index + i``. ``failed_state`` says
    whether failed groups keep a ``param_state`` (default: yes for h5py style, no for C style).
    ``missing_success`` omits the ``success`` attribute everywhere (old files).
    """
    if style not in STYLES:
        raise ValueError(f"style: expected one of {STYLES}, but got {style!r}")
    n = _row_count(inputs, outputs, success)
    state = np.ones((n, len(param_names)), np.float32) if inputs is None else np.asarray(inputs, np.float32)
    ok = np.ones(n, bool) if success is None else np.asarray(success, bool)
    idx = np.arange(start_index, start_index + n) if indices is None else np.asarray(indices)
    keep_failed = (style != "cstyle") if failed_state is None else failed_state
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        _write_root(f, param_names, ok, style)
        for i in range(n):
            outs = {a: float(np.asarray(v)[i]) for a, v in outputs.items()}
            g = _write_group(f, _group_name(int(idx[i]), style), int(idx[i]), bool(ok[i]), state[i],
                             outs, style, missing_success, keep_failed)
            if with_cycles and ok[i]:
                _write_cycles(g, next(iter(outs.values()), 0.0), n_cycles, cycle_shape)
    return path


def _row_count(inputs: np.ndarray | None, outputs: Mapping[str, np.ndarray], success: np.ndarray | None) -> int:
    """N, checked to agree between inputs, outputs and success."""
    sizes = {len(np.asarray(v)) for v in outputs.values()}
    if inputs is not None:
        sizes.add(len(inputs))
    if success is not None:
        sizes.add(len(success))
    if len(sizes) != 1:
        raise ValueError(f"inputs/outputs/success: expected one row count, but got {sorted(sizes)}")
    return sizes.pop()


def make_demo_file(path: str | os.PathLike, n: int = 400, seed: int = 0) -> Path:
    """A demo rollout file: noisy ``true_cot`` over random (stride, cadence) in [0.7, 1.3].

    Noise std 1, about 1% outliers (+15..25), about 5% failed runs; the other 11 parameters
    are 1.0. The outcome is written as ``metabolic/cot/MA/mean`` (alias ``cot_ma15``).
    """
    rng = np.random.default_rng(seed)
    x = np.ones((n, len(DEFAULT_13_NAMES)), np.float32)
    x[:, 0] = rng.uniform(0.7, 1.3, n)
    x[:, 1] = rng.uniform(0.7, 1.3, n)
    y = true_cot(x[:, 0], x[:, 1]) + rng.normal(0.0, 1.0, n)
    outliers = rng.random(n) < 0.01
    y[outliers] += rng.uniform(15.0, 25.0, int(outliers.sum()))
    success = rng.random(n) >= 0.05
    std = np.abs(rng.normal(1.0, 0.2, n))
    return write_rollout_file(path, x, {COT_ATTR: y, COT_STD_ATTR: std}, success)


def campaign_rows(n_groups: int, n_inputs_varied: int = 13, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, cost and success of a random campaign (the first ``n_inputs_varied`` params vary)."""
    rng = np.random.default_rng(seed)
    x = np.ones((n_groups, len(DEFAULT_13_NAMES)), np.float32)
    x[:, :n_inputs_varied] = rng.uniform(0.7, 1.3, (n_groups, n_inputs_varied))
    y = true_cot(x[:, 0], x[:, 1]) + 5.0 * (x[:, 2:] - 1.0).sum(axis=1) + rng.normal(0.0, 1.0, n_groups)
    success = rng.random(n_groups) >= 0.05
    return x, y, success


def make_campaign(
    directory: str | os.PathLike, n_groups: int, n_files: int, n_inputs_varied: int = 13, seed: int = 0,
) -> list[Path]:
    """A random campaign split over ``n_files`` run folders ``run_XXX/rollout_data.h5``.

    Group indices continue across files (as a campaign that appends runs would have them),
    so the union of all files is the same data as one file of ``n_groups`` groups.
    """
    x, y, ok = campaign_rows(n_groups, n_inputs_varied, seed)
    bounds = np.linspace(0, n_groups, n_files + 1).astype(int)
    paths = []
    for k in range(n_files):
        lo, hi = bounds[k], bounds[k + 1]
        out = Path(directory) / f"run_{k:03d}" / "rollout_data.h5"
        paths.append(write_rollout_file(out, x[lo:hi], {COT_ATTR: y[lo:hi]}, ok[lo:hi], start_index=int(lo)))
    return paths
