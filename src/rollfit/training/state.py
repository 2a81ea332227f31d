"""Training state a checkpoint carries for an exact resume, in checkpoint-safe types.

Checkpoints load with ``torch.load(weights_only=True)``, so the RNG states are stored as
tensors and plain types (``capture_rng``, ``restore_rng``). ``load_optimizer_state`` copies
into the existing state tensors when it can, so an engine that captured them (a CUDA graph)
keeps working after a rollback or resume.
"""
from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor


def capture_rng() -> dict[str, Any]:
    """The global RNG states: python, numpy, torch CPU and (when in use) CUDA."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": {"version": int(version), "state": [int(v) for v in internal],
                   "gauss_next": [] if gauss_next is None else [float(gauss_next)]},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global RNGs from ``capture_rng``'s dict (CUDA only when the device count matches)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"][0] if py["gauss_next"] else None))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def clone_tree(obj: Any) -> Any:
    """A deep copy with every tensor cloned (state_dicts share storage with live tensors)."""
    return copy.deepcopy(obj)


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load an optimizer ``state_dict``, in place when the live state has the same structure.

    In place means the existing moment tensors are overwritten with ``copy_`` rather than
    replaced, so anything holding references to them (a captured CUDA graph) stays valid.
    Hyperparameters of each param group (lr, betas, ...) are restored as well.
    """
    params = [p for g in opt.param_groups for p in g["params"]]
    state = saved["state"]
    same = (len(opt.state) == len(state) == len(params)
            and all(_same_structure(opt.state[p], state.get(i, {})) for i, p in enumerate(params)))
    if not same:
        opt.load_state_dict(clone_tree(saved))  # torch may keep the given tensors: never share them
        return
    with torch.no_grad():
        for i, p in enumerate(params):
            for key, value in state[i].items():
                opt.state[p][key].copy_(value)
    for group, saved_group in zip(opt.param_groups, saved["param_groups"]):
        for key, value in saved_group.items():
            if key != "params":
                set_group_value(group, key, value)


def _same_structure(live: dict[str, Any], saved: dict[str, Any]) -> bool:
    return (live.keys() == saved.keys()
            and all(isinstance(live[k], Tensor) and isinstance(saved[k], Tensor) and live[k].shape == saved[k].shape
                    for k in live))


def set_group_value(group: dict[str, Any], key: str, value: Any) -> None:
    """Set a param-group hyperparameter, in place when it is a tensor (capturable optimizers)."""
    current = group.get(key)
    if isinstance(current, Tensor):
        with torch.no_grad():
            current.copy_(torch.as_tensor(value, dtype=current.dtype))
    else:
        group[key] = value
