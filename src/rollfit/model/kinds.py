"""Model kinds: what every trained model offers, and the registry that rebuilds each kind.

A *model kind* (``model.kind`` in the config, ``kind`` in a checkpoint's config; absent means
``mlp``) is a torch module with the same face to the rest of rollfit (the ``Predictor``
protocol below): raw inputs in, outputs in original units out, differentiable, so that
predict, evaluate, plots, optimize, suggest and the exports need no branch per kind.

Each kind is one ``KindSpec`` entry in ``KINDS``: how to rebuild the module from a
checkpoint's config (weights are then loaded with ``load_state_dict(strict=True)``), whether
it has an uncertainty, whether a run of it can be resumed, and which export formats it
supports. Fitting a kind lives above this layer (``pipeline.fitting``), because it needs the
trainer; ``auto`` is not a kind of model but a choice among them (``pipeline.auto``), and a
run of it stores the kind it chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, did_you_mean

DEFAULT_KIND = "mlp"  # checkpoints without a ``kind`` (the original's, rollfit 0.1's) hold one MLP


@runtime_checkable
class Predictor(Protocol):
    """What the analysis, suggest and export code need of any trained model.

    ``forward(x)``: raw inputs (N, D) -> mean outputs (N, K) in original units,
    differentiable with respect to ``x`` and in the dtype the module was moved to (optimize
    moves a copy to float64). ``predict_std(x)``: (mean, std) in original units, where std is
    the standard deviation of a new observation at ``x`` (model uncertainty plus noise), so
    that mean +- 1.96 std is a 95% interval for held-out rows; kinds without an uncertainty
    raise ``ConfigError`` (``require_std``). ``input_mean``/``input_std`` are buffers with the
    training inputs' statistics (optimize scales its steps by them).
    """

    kind: str
    input_dim: int
    output_dim: int
    input_mean: Tensor
    input_std: Tensor

    def forward(self, x: Tensor) -> Tensor: ...

    def predict(self, x: Tensor) -> Tensor: ...

    def predict_std(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def constructor_args(self) -> dict: ...


@dataclass(frozen=True)
class KindSpec:
    """One model kind: how to rebuild it and what it can do."""

    name: str
    build: Callable[[dict[str, Any]], nn.Module]  # checkpoint config -> module, weights not loaded
    has_std: bool                                 # predict_std gives a real uncertainty
    resumable: bool                               # --resume continues its training
    exports: tuple[str, ...]                      # export formats it supports
    summary: str                                  # one line for docs and error messages


KINDS: dict[str, KindSpec] = {}


def register_kind(spec: KindSpec) -> KindSpec:
    """Add a kind (a module calls this at import; ``_load_builtin`` imports the built-in ones)."""
    KINDS[spec.name] = spec
    return spec


BUILTIN_MODULES = ("network", "ensemble", "gp")  # modules of this package that register the built-in kinds


def _load_builtin() -> None:
    """Import the modules that register the built-in kinds (lazily: BoTorch is slow to import)."""
    import importlib

    for name in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{name}")


def kind_spec(name: str) -> KindSpec:
    """The registered kind ``name``; a one-line error naming the known ones otherwise."""
    _load_builtin()
    if name not in KINDS:
        raise CheckpointError(f"kind: expected one of {', '.join(sorted(KINDS))}, but got '{name}'"
                              f"{did_you_mean(str(name), list(KINDS))}")
    return KINDS[name]


def kind_of(cfg: dict[str, Any]) -> str:
    """The kind a checkpoint's config records (``mlp`` when it records none)."""
    return str(cfg.get("kind", DEFAULT_KIND))


def kinds_with(flag: str) -> list[str]:
    """Names of the kinds whose ``KindSpec`` has ``flag`` true (``has_std``, ``resumable``)."""
    _load_builtin()
    return sorted(n for n, s in KINDS.items() if getattr(s, flag))


def kinds_exporting(fmt: str) -> list[str]:
    """Names of the kinds that export to ``fmt``."""
    _load_builtin()
    return sorted(n for n, s in KINDS.items() if fmt in s.exports)


def require_std(kind: str, what: str = "an uncertainty") -> None:
    """ConfigError unless ``kind`` has an uncertainty: one line naming the kinds that have one."""
    if not kind_spec(kind).has_std:
        raise ConfigError(f"model kind '{kind}': expected a model with {what}, but '{kind}' predicts a mean "
                          f"only; train one of {', '.join(kinds_with('has_std'))} (model.kind)")


def no_std(kind: str) -> Callable[..., tuple[Tensor, Tensor]]:
    """A ``predict_std`` for kinds without an uncertainty: raises ``require_std``'s error."""
    def predict_std(self: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        require_std(kind)
        raise AssertionError("unreachable")
    return predict_std


def as_input(module: nn.Module, x: Any) -> Tensor:
    """``x`` as a tensor on the module's device and dtype (of its ``input_mean`` buffer)."""
    ref = module.input_mean
    return torch.as_tensor(x, dtype=ref.dtype, device=ref.device)


def check_kind_name(name: str, where: str = "model.kind") -> str:
    """``name`` if it is a registered kind, else a ConfigError naming the known ones."""
    _load_builtin()
    if name not in KINDS:
        raise ConfigError(f"{where}: expected one of {', '.join(sorted(KINDS))}, but got '{name}'"
                          f"{did_you_mean(str(name), list(KINDS))}")
    return name
