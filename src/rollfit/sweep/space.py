"""A sweep's search space: ``SPACE.yaml`` parsed and checked against the config schema.

A space names dotted config keys (``trainer.lr``, ``model.layers``) with a distribution::

    trainer.lr: {loguniform: [1.0e-4, 1.0e-1]}   # log-uniform between the bounds
    trainer.grad_weight: {uniform: [0.0, 0.05]}  # uniform between the bounds
    trainer.lr_patience: {randint: [20, 200]}    # an integer, both ends included
    model.activation: {choice: [gelu, silu]}     # one of the values, sampled
    model.layers: [[64, 32], [128, 64]]          # a plain list is a grid: every value is tried
    trainer.recon_type: {grid: [huber, mse]}     # the same, spelled out

Everything is checked before a single trial starts: the key must exist in the schema
(did-you-mean on typos), the spec must be well formed, and every value a trial can draw
(each choice/grid value, both bounds of a range) must pass the config validation with the
base config. Keys that change which rows are read are refused, since a sweep reads its data
once for all trials. This module imports no Ray; ``to_ray`` converts on demand.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import Config, all_keys, apply_overrides, read_yaml_file, validate
from ..errors import ConfigError, did_you_mean

KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
# Trials of one sweep (grid points x samples): each trains a network, so more is a typo or a bomb.
MAX_TRIALS = 10_000
RANGE_KINDS = ("uniform", "loguniform", "randint")
# Keys that decide which rows are loaded: the table is read once per sweep, so they cannot vary.
FIXED_DATA_KEYS = ("data.hdf5_path", "data.in_lbl", "data.out_lbl", "data.aliases", "data.on_missing",
                   "data.on_nonfinite", "data.cache", "data.cache_dir", "data.workers")


@dataclass(frozen=True)
class Param:
    """One swept key: its distribution kind and its values (choice/grid) or bounds (ranges)."""

    key: str
    kind: str
    values: tuple[Any, ...]

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    @property
    def encoded(self) -> bool:
        """True when choice/grid values are not scalars (lists): Ray/Optuna get JSON strings."""
        return self.kind in ("choice", "grid") and any(not _is_scalar(v) for v in self.values)

    def describe(self) -> str:
        """Short text for tables and errors, e.g. ``loguniform[0.0001, 0.1]``."""
        return f"{self.kind}{list(self.values)}"


@dataclass
class SearchSpace:
    """The parsed, validated space; ``params`` in file order."""

    params: list[Param]
    source: str = "space"
    notes: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    @property
    def has_grid(self) -> bool:
        return any(p.is_grid for p in self.params)

    def grid_size(self) -> int:
        """Number of grid points (1 when there is no grid)."""
        return math.prod(len(p.values) for p in self.params if p.is_grid)

    def to_ray(self) -> dict[str, Any]:
        """Ray Tune ``param_space`` (flat, dotted keys); needs ray installed."""
        from ray import tune

        out: dict[str, Any] = {}
        for p in self.params:
            vals = [json.dumps(v) for v in p.values] if p.encoded else list(p.values)
            if p.kind == "choice":
                out[p.key] = tune.choice(vals)
            elif p.kind == "grid":
                out[p.key] = tune.grid_search(vals)
            elif p.kind == "uniform":
                out[p.key] = tune.uniform(*p.values)
            elif p.kind == "loguniform":
                out[p.key] = tune.loguniform(*p.values)
            else:  # randint: both ends included; Ray's upper bound is exclusive
                out[p.key] = tune.randint(p.values[0], p.values[1] + 1)
        return out

    def decode(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """Sampled Ray values -> plain config values, keyed by dotted key."""
        out = {}
        for p in self.params:
            v = sampled[p.key]
            out[p.key] = json.loads(v) if p.encoded and isinstance(v, str) else _plain(v)
        return out


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _plain(v: Any) -> Any:
    """numpy scalars (from samplers) -> Python scalars, so YAML and pydantic take them."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_param(key: str, spec: Any, src: str) -> Param:
    """One ``key: spec`` entry -> ``Param``; one-line errors for malformed specs."""
    where = f"{src}: key '{key}'"
    if isinstance(spec, list):
        kind, values = "grid", spec
    elif isinstance(spec, dict) and len(spec) == 1:
        kind, values = next(iter(spec.items()))
        if kind not in KINDS:
            raise ConfigError(f"{where}: expected a distribution ({', '.join(KINDS)}), but got '{kind}'"
                              f"{did_you_mean(str(kind), KINDS)}")
    else:
        raise ConfigError(f"{where}: expected a list of grid values or a mapping with one of "
                          f"{', '.join(KINDS)}, but got {spec!r}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: expected a non-empty list of values for {kind}, but got {values!r}")
    if kind in RANGE_KINDS:
        _check_range(where, kind, values)
    return Param(key, kind, tuple(values))


def _check_range(where: str, kind: str, values: list) -> None:
    """Bounds of uniform/loguniform/randint: two numbers, low < high (> 0 for log, ints for randint)."""
    if len(values) != 2 or not all(_is_number(v) for v in values):
        raise ConfigError(f"{where}: expected {kind}: [low, high] with two finite numbers, but got {values!r}")
    lo, hi = values
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{where}: expected randint: [low, high] with integers, but got {values!r}")
    if not lo < hi:
        raise ConfigError(f"{where}: expected {kind} low < high, but got [{lo}, {hi}]")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: expected loguniform bounds > 0, but got [{lo}, {hi}]")


def check_keys(keys: list[str], src: str) -> None:
    """Every key must be a schema key, and none may change which rows are loaded."""
    known = all_keys()
    for key in keys:
        if key not in known:
            raise ConfigError(f"{src}: expected dotted config keys (section.key), but got unknown key "
                              f"'{key}'{did_you_mean(key, known)}")
        if key in FIXED_DATA_KEYS:
            raise ConfigError(f"{src}: key '{key}': expected a key that keeps the loaded rows (a sweep reads its "
                              f"data once for all trials), but got one that changes them; set it in --config")


def check_values(space: SearchSpace, base: dict[str, Any]) -> None:
    """Every value a trial can draw must validate with the base config (before any trial runs)."""
    for p in space.params:
        for v in p.values:  # choice/grid: every value; ranges: both bounds
            validate(with_values(base, {p.key: v}), source=f"{space.source}: {p.key}: {p.describe()}")


def with_values(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw config dict ``base`` with dotted-key ``values`` set."""
    out = apply_overrides(base, [])
    for key, v in values.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = v
    return out


def flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """Accept sections as nesting too: ``{trainer: {lr: spec}}`` -> ``{"trainer.lr": spec}``."""
    out: dict[str, Any] = {}
    for key, spec in raw.items():
        key = str(key)
        nested = isinstance(spec, dict) and "." not in key and not (len(spec) == 1 and next(iter(spec)) in KINDS)
        if nested:
            out.update({f"{key}.{k}": v for k, v in spec.items()})
        else:
            out[key] = spec
    return out


def parse_space(raw: Any, source: str = "space") -> SearchSpace:
    """A mapping of dotted keys to specs -> ``SearchSpace`` (keys and specs checked)."""
    if not isinstance(raw, dict) or not raw:
        found = type(raw).__name__ if raw is not None and raw != {} else "an empty file"
        raise ConfigError(f"{source}: expected a mapping of dotted config keys to distributions, but got {found}")
    raw = flatten(raw)
    check_keys(list(raw), source)
    space = SearchSpace([_parse_param(k, v, source) for k, v in raw.items()], source)
    check_trials(space, 1)
    return space


def check_trials(space: SearchSpace, samples: Optional[int]) -> int:
    """The number of trials (grid points x samples; samples None: 1 with a grid, else 10), at most ``MAX_TRIALS``."""
    samples = samples or (1 if space.has_grid else 10)
    grid = space.grid_size()
    total = grid * samples
    if total > MAX_TRIALS:
        shape = " x ".join(str(len(p.values)) for p in space.params if p.is_grid) or "no grid"
        raise ConfigError(f"{space.source}: expected at most {MAX_TRIALS} trials, but got {total:,} "
                          f"(grid {shape} = {grid:,} points x {samples:,} samples); sweep fewer values")
    return total


def read_space_yaml(path: str | Path) -> Any:
    """The YAML document of a space file, with one-line errors for a missing or malformed file."""
    return read_yaml_file(path, "a search-space YAML file")


def load_space(path: str | Path, base: Optional[Config] = None) -> SearchSpace:
    """Read ``SPACE.yaml``, check it, and check its values against ``base`` (defaults when None)."""
    space = parse_space(read_space_yaml(path), str(path))
    check_values(space, (base or Config()).to_dict())
    return space
