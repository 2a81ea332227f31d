"""The activation and reconstruction-loss registries: one entry per name, used everywhere.

An ``Activation`` carries its torch function, the first and second derivative the fused
training step needs, and the C expression of the C export; a ``Loss`` carries its value,
its derivative by the residual (the fused step) and its warm-start rule. The network,
the fused step, the C header export and the configuration schema's allowed values all
read these dicts, so adding an activation or a loss is one ``register`` call here (or in
user code before the config is read). This module imports torch only inside the
functions, so the configuration schema (and the CLI's argument checks) can import it
without paying for torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Union

if TYPE_CHECKING:
    from torch import Tensor

Parts = tuple["Tensor", "Tensor", Optional["Tensor"]]
_LOG_INV_SQRT_2PI = -0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Activation:
    """``value(z)``; ``parts(z, second)`` = (act(z), act'(z), act''(z) when ``second`` else
    None; None also when act'' is zero); ``c``: a C99 float expression of ``z``."""

    name: str
    value: Callable[["Tensor"], "Tensor"]
    parts: Callable[["Tensor", bool], Parts]
    c: str


@dataclass(frozen=True)
class Loss:
    """``rho(r, d)``: the loss of each residual; ``grad(r, d)``: d rho / d r per element (the
    mean's 1/n applied by the caller); ``d = recon_delta * delta_scale``; ``warm_start``: use
    huber before ``recon_start_epoch`` (non-convex losses)."""

    name: str
    rho: Callable[["Tensor", float], "Tensor"]
    grad: Callable[["Tensor", float], "Tensor"]
    delta_scale: float = 1.0
    warm_start: bool = False

    def value(self, r: "Tensor", d: float, weights: Optional["Tensor"] = None) -> "Tensor":
        """The mean of rho over the elements of ``r``, each weighed by ``weights`` when given
        (broadcast against ``r``; a bootstrap member's draw counts, which average to one)."""
        rho = self.rho(r, d)
        return rho.mean() if weights is None else (rho * weights).mean()


ACTIVATIONS: dict[str, Activation] = {}
LOSSES: dict[str, Loss] = {}


def register(entry: Union[Activation, Loss]) -> None:
    """Add (or replace) an activation or a loss under its name."""
    (ACTIVATIONS if isinstance(entry, Activation) else LOSSES)[entry.name] = entry


# ---- activations -----------------------------------------------------------------------------
def _gelu(z: "Tensor") -> "Tensor":
    import torch.nn.functional as F
    return F.gelu(z)


def _gelu_parts(z: "Tensor", second: bool) -> Parts:
    import torch
    d1 = torch.ops.aten.gelu_backward(torch.ones_like(z), z)  # Phi(z) + z phi(z), one kernel
    d2 = None
    if second:
        z2 = z * z
        d2 = torch.rsub(z2, 2.0).mul_(torch.exp(z2 * -0.5 + _LOG_INV_SQRT_2PI))  # (2 - z^2) phi(z)
    return _gelu(z), d1, d2


def _silu(z: "Tensor") -> "Tensor":
    import torch.nn.functional as F
    return F.silu(z)


def _silu_parts(z: "Tensor", second: bool) -> Parts:
    import torch
    s = torch.sigmoid(z)
    t = torch.rsub(s, 1.0)
    d1 = torch.addcmul(s, s, z * t)
    d2 = (s * t).mul_(torch.addcmul(torch.full_like(z, 2.0), z, t - s)) if second else None
    return _silu(z), d1, d2


def _tanh_parts(z: "Tensor", second: bool) -> Parts:
    a = z.tanh()
    d1 = 1.0 - a * a
    return a, d1, ((a * d1).mul_(-2.0) if second else None)


def _relu_parts(z: "Tensor", second: bool) -> Parts:
    return z.relu(), (z > 0).to(z.dtype), None  # act'' = 0 (as torch's double backward)


register(Activation("gelu", _gelu, _gelu_parts, "0.5f * z * (1.0f + erff(z * 0.70710678118654752440f))"))
register(Activation("silu", _silu, _silu_parts, "z / (1.0f + expf(-z))"))
register(Activation("relu", lambda z: z.relu(), _relu_parts, "z > 0.0f ? z : 0.0f"))
register(Activation("tanh", lambda z: z.tanh(), _tanh_parts, "tanhf(z)"))


# ---- reconstruction losses (rollfit applies them to normalized targets) ------------------------
def _huber(r: "Tensor", d: float) -> "Tensor":
    import torch
    return torch.nn.functional.huber_loss(r, torch.zeros_like(r), reduction="none", delta=d)


def _tukey(r: "Tensor", d: float) -> "Tensor":
    import torch
    u = (r / d).square()
    inside = d * d / 6.0 * (1.0 - (1.0 - u).pow(3))
    return torch.where(u <= 1.0, inside, torch.full_like(r, d * d / 6.0))


def _tukey_grad(r: "Tensor", d: float) -> "Tensor":
    import torch
    u = (r / d).square()
    return torch.where(u <= 1.0, r * torch.rsub(u, 1.0).square(), torch.zeros_like(r))


register(Loss("mse", lambda r, d: r.square(), lambda r, d: r * 2.0))
register(Loss("huber", _huber, lambda r, d: r.clamp(-d, d)))
register(Loss("cauchy", lambda r, d: 0.5 * d * d * (r / d).square().log1p(),
              lambda r, d: r / (r / d).square().add_(1.0), delta_scale=1.2))
register(Loss("welsch", lambda r, d: 0.5 * d * d * (1.0 - (-(r / d).square()).exp()),
              lambda r, d: r * (-(r / d).square()).exp(), delta_scale=1.8, warm_start=True))
register(Loss("geman", lambda r, d: 0.5 * r.square() / (1.0 + r.square() / (d * d)),
              lambda r, d: r / (r / d).square().add_(1.0).square(), delta_scale=1.2, warm_start=True))
register(Loss("tukey", _tukey, _tukey_grad, delta_scale=3.5, warm_start=True))


def loss_in_effect(kind: str, epoch: int, start_epoch: int) -> Loss:
    """The loss at ``epoch``: a warm-started loss is huber before ``start_epoch``."""
    loss = LOSSES[kind]
    return LOSSES["huber"] if loss.warm_start and epoch < start_epoch else loss
