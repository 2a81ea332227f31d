"""Reconstruction losses (``registry.LOSSES``) and the weight and input-gradient penalties.

Definitions follow the original pipeline so that tuned configs behave the same; the only
deliberate difference is that rollfit applies them to normalized targets. With
``d = recon_delta * scale[type]`` (scale: cauchy 1.2, welsch 1.8, geman 1.2, tukey 3.5)
and residual r:

- mse:    r^2
- huber:  torch's huber_loss(delta=recon_delta)
- cauchy: 0.5 d^2 log(1 + (r/d)^2)
- welsch: 0.5 d^2 (1 - exp(-(r/d)^2))
- geman:  0.5 r^2 / (1 + (r/d)^2)
- tukey:  d^2/6 (1 - (1 - (r/d)^2)^3) for |r| <= d, else d^2/6

each averaged over all elements. geman, welsch and tukey fall back to huber before
``recon_start_epoch`` (non-convex losses need a warm start).

Penalties: L1 = sum over parameter tensors of mean |w|, L2 = sum of mean w^2 (biases
included), GP = mean over the batch of sum_j (d sum_k y_k / d x_j)^2 with each derivative
clamped to +-1e3. y is the network output in training units (normalized targets); x is the
normalized input by default (``grad_space: normalized``), so one ``grad_weight`` means the
same smoothing whatever units the inputs have; ``grad_space: raw`` differentiates by the raw
input as the original did.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor

from ..errors import ConfigError, did_you_mean
from .registry import LOSSES, loss_in_effect

GRAD_CLAMP = 1e3


def reconstruction_loss(pred: Tensor, target: Tensor, kind: str, delta: float = 1.0,
                        epoch: int = 0, start_epoch: int = 0, weights: Optional[Tensor] = None) -> Tensor:
    """The configured reconstruction loss of ``pred`` vs ``target`` (mean over elements, each
    row weighed by ``weights`` (..., N, 1) when given: a bootstrap member's draw counts)."""
    if kind not in LOSSES:
        raise ConfigError(f"trainer.recon_type: expected one of {', '.join(LOSSES)}, but got '{kind}'"
                          f"{did_you_mean(str(kind), LOSSES)}")
    loss = loss_in_effect(kind, epoch, start_epoch)
    return loss.value(pred - target, delta * loss.delta_scale, weights)


def l1_penalty(params: Iterable[Tensor]) -> Tensor:
    """Sum over parameter tensors (biases included) of mean |w|."""
    return torch.stack([p.abs().mean() for p in params]).sum()


def l2_penalty(params: Iterable[Tensor]) -> Tensor:
    """Sum over parameter tensors (biases included) of mean w^2."""
    return torch.stack([p.square().mean() for p in params]).sum()


def grad_penalty(g: Tensor, input_scale: Optional[Tensor] = None, weights: Optional[Tensor] = None) -> Tensor:
    """GP from the input gradient g (B, D) of sum_k y_k by the RAW input: mean_b sum_j
    (g_bj * input_scale_j clamped to +-1e3)^2. ``input_scale`` = the inputs' std turns
    d/dx_raw into d/dx_normalized (``grad_space: normalized``); None keeps the raw one.
    ``weights`` (..., B, 1): each row's weight in the mean (a bootstrap member's draw counts)."""
    if input_scale is not None:
        g = g * input_scale
    per_row = g.clamp(-GRAD_CLAMP, GRAD_CLAMP).square().sum(dim=-1)
    return per_row.mean() if weights is None else (per_row * weights[..., 0]).mean()


def gp_input_scale(input_std: Tensor, grad_space: str) -> Optional[Tensor]:
    """The per-input factor of the penalty's derivatives: the inputs' std for ``normalized``."""
    return input_std if grad_space == "normalized" else None


def grad_penalty_double_backward(pred: Tensor, x: Tensor, input_scale: Optional[Tensor] = None,
                                 weights: Optional[Tensor] = None) -> Tensor:
    """GP by autograd (the original's way): x (raw) must require grad and ``pred`` depend on it."""
    (g,) = torch.autograd.grad(pred, x, torch.ones_like(pred), create_graph=True)
    return grad_penalty(g, input_scale, weights)
