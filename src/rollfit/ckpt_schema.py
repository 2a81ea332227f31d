"""The shape of a checkpoint dict, checked before any of it is used.

``torch.load(..., weights_only=True)`` keeps a crafted checkpoint from running code, but
what it returns is still untrusted data: ``format_version`` may be a string, ``config`` a
list, ``layers`` a string, ``epoch`` ``"x"``. ``validate_checkpoint`` checks the types and
keys every reader relies on and raises one ``CheckpointError`` naming the key, what was
expected and what was found, so no later ``int()``, comparison or indexing can fail with
a traceback. It imports no torch: tensors are recognized by their ``shape``/``dtype``.

Checked: the original pipeline's keys (``model_state_dict``, ``config`` with ``input_dim`` ...
``target_std``), rollfit's config additions when present (``format_version``, labels,
``target_convention``, ``activation``, input bounds), and the resume state when present
(``epoch``, optimizer/scheduler dicts, ``trainer_state`` with ``shuffle_rng``,
``global_rng``, ``rollbacks``, ``log_file``); ``resume=True`` also requires the latter.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import CheckpointError

Check = Callable[[Any], bool]
SEED_KEYS = ("input_dim", "output_dim", "layers", "residual", "input_mean", "input_std", "target_mean", "target_std")
RESUME_KEYS = ("epoch", "optimizer_state_dict", "scheduler_state_dict", "trainer_state")
MAX_WIDTH = 1 << 24  # no real layer is this wide; a crafted one must not allocate terabytes


def found(value: Any) -> str:
    """A short description of a value for messages: its type and a clipped repr."""
    if _is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _is_tensor(v: Any) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, (str, bytes))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _dim(v: Any) -> bool:
    return _is_int(v) and 1 <= v <= MAX_WIDTH


def _widths(v: Any) -> bool:
    return isinstance(v, list) and len(v) >= 1 and all(_dim(w) for w in v)


def _labels(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) and s for s in v)


def _vector(n: Any) -> Check:
    """A list of ``n`` finite numbers, or a tensor of ``n`` elements."""
    def check(v: Any) -> bool:
        if _is_tensor(v):
            return math.prod(tuple(v.shape)) == n
        return isinstance(v, (list, tuple)) and len(v) == n and all(_is_number(x) for x in v)
    return check


class _Checker:
    """Raises one CheckpointError per problem, naming ``path`` and the dotted key."""

    def __init__(self, path: str | Path) -> None:
        self.path = path

    def need(self, d: dict, key: str, ok: Check, expected: str, where: str = "", optional: bool = False) -> Any:
        name = f"{where}{key}"
        if key not in d:
            if optional:
                return None
            raise CheckpointError(f"{self.path}: {name}: expected {expected}, but it is missing")
        if not ok(d[key]):
            raise CheckpointError(f"{self.path}: {name}: expected {expected}, but got {found(d[key])}")
        return d[key]


def validate_checkpoint(ckpt: Any, path: str | Path, resume: bool = False) -> dict[str, Any]:
    """``ckpt`` if it has the shape of a (rollfit or original) checkpoint, else a CheckpointError.

    ``resume=True``: the training state a resume needs must be there too.
    """
    c = _Checker(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, but got {found(ckpt)}")
    c.need(ckpt, "model_state_dict",
           lambda v: isinstance(v, dict) and all(isinstance(k, str) and _is_tensor(t) for k, t in v.items()),
           "a dict of named tensors")
    cfg = c.need(ckpt, "config", lambda v: isinstance(v, dict), "a dict")
    _check_config(c, cfg)
    _check_training_state(c, ckpt, resume)
    return ckpt


def _check_config(c: _Checker, cfg: dict) -> None:
    """The network's constructor arguments and rollfit's additions."""
    w = "config."
    n_in = c.need(cfg, "input_dim", _dim, f"an integer from 1 to {MAX_WIDTH}", w)
    n_out = c.need(cfg, "output_dim", _dim, f"an integer from 1 to {MAX_WIDTH}", w)
    if cfg.get("kind") in ("gp", "robust_gp"):  # kernel models: no layers (layers=[] in their config)
        c.need(cfg, "layers", lambda v: v == [], "[] (a Gaussian process has no layers)", w)
    else:
        c.need(cfg, "layers", _widths, f"a non-empty list of integer widths from 1 to {MAX_WIDTH}", w)
    c.need(cfg, "residual", lambda v: isinstance(v, bool), "true or false", w)
    for key, n in (("input_mean", n_in), ("input_std", n_in), ("target_mean", n_out), ("target_std", n_out)):
        c.need(cfg, key, _vector(n), f"{n} finite numbers", w)
    for key in ("input_min", "input_max"):
        c.need(cfg, key, _vector(n_in), f"{n_in} finite numbers", w, optional=True)
    c.need(cfg, "format_version", lambda v: _is_int(v) and v >= 1, "an integer >= 1", w, optional=True)
    c.need(cfg, "target_convention", lambda v: v in ("normalized", "raw"), "'normalized' or 'raw'", w, optional=True)
    c.need(cfg, "activation", lambda v: isinstance(v, str) and bool(v), "an activation name", w, optional=True)
    c.need(cfg, "in_lbl", lambda v: _labels(v) and len(v) == n_in, f"{n_in} label names", w, optional=True)
    c.need(cfg, "out_lbl", lambda v: _labels(v) and len(v) == n_out, f"{n_out} label names", w, optional=True)
    c.need(cfg, "aliases", lambda v: isinstance(v, dict) and all(isinstance(x, str) for kv in v.items() for x in kv),
           "a dict of label names to attribute names", w, optional=True)
    for key in ("loss", "run_config", "data_summary", "split", "resolved"):
        c.need(cfg, key, lambda v: isinstance(v, dict), "a dict", w, optional=True)


def _check_training_state(c: _Checker, ckpt: dict, resume: bool) -> None:
    """``epoch``, optimizer/scheduler state and ``trainer_state`` (all required for a resume)."""
    opt = not resume
    c.need(ckpt, "epoch", lambda v: _is_int(v) and v >= 0, "an integer >= 0", optional=opt)
    for key in ("optimizer_state_dict", "scheduler_state_dict"):
        c.need(ckpt, key, lambda v: isinstance(v, dict), "a dict", optional=opt)
    ts: Optional[dict] = c.need(ckpt, "trainer_state", lambda v: isinstance(v, dict), "a dict", optional=opt)
    if ts is None:
        return
    w = "trainer_state."
    c.need(ts, "shuffle_rng", _is_tensor, "the shuffling generator's state (a tensor)", w)
    c.need(ts, "global_rng", lambda v: isinstance(v, dict), "a dict of RNG states", w)
    c.need(ts, "rollbacks", lambda v: _is_int(v) and v >= 0, "an integer >= 0", w, optional=True)
    c.need(ts, "log_file", lambda v: isinstance(v, str) and bool(v), "a file name", w, optional=True)
    c.need(ts, "net_state_dict", lambda v: isinstance(v, dict) and all(_is_tensor(t) for t in v.values()),
           "a dict of weight tensors", w, optional=True)
    c.need(ts, "net_convention", lambda v: v in ("normalized", "raw"), "'normalized' or 'raw'", w, optional=True)
