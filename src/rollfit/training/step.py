"""The training step: loss of a batch, one optimizer update, validation loss.

``StepEngine`` is the plain (eager) implementation the ``Trainer`` calls; faster
engines (compiled, CUDA-graph captured) share its interface: ``step(x, yn, epoch)``
returns detached loss components, ``validate()`` the validation MSE as a tensor.
The input-gradient penalty is computed by forward Jacobian propagation by default
(one backward pass); ``compile: off`` uses the original double backward.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..config import TrainerConfig
from ..model import losses
from ..model.network import RegressionNet

COMPONENTS = ("reconstruction", "l1", "l2", "grad_penalty")


class StepEngine:
    """Eager step over resident tensors; ``val_x``/``val_yn`` are the validation rows."""

    def __init__(self, model: RegressionNet, cfg: TrainerConfig, opt: torch.optim.Optimizer,
                 val_x: Tensor, val_yn: Tensor):
        self.model, self.cfg, self.opt = model, cfg, opt
        self.params: Sequence[Tensor] = [p for p in model.parameters()]
        self.val_x, self.val_yn = val_x, val_yn
        self.use_jacobian = cfg.compile != "off"

    def step(self, x: Tensor, yn: Tensor, epoch: int) -> dict[str, Tensor]:
        """One optimizer update on a batch; returns detached ``train`` and components."""
        total, parts = self.loss(x, yn, epoch)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        return {"train": total.detach(), **{k: v.detach() for k, v in parts.items()}}

    def loss(self, x: Tensor, yn: Tensor, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Total weighted loss and its components for raw inputs and training-unit targets."""
        c = self.cfg
        pred, gp = self.predict_with_penalty(x)
        rec = losses.reconstruction_loss(pred, yn, c.recon_type, c.recon_delta, epoch, c.recon_start_epoch)
        l1 = losses.l1_penalty(self.params)
        l2 = losses.l2_penalty(self.params)
        total = c.recon_weight * rec + c.l1_weight * l1 + c.l2_weight * l2 + c.grad_weight * gp
        return total, {"reconstruction": rec, "l1": l1, "l2": l2, "grad_penalty": gp}

    def predict_with_penalty(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Prediction and input-gradient penalty (skipped when its weight is 0)."""
        if self.cfg.grad_weight == 0:
            pred = self.model(x)
            return pred, pred.new_zeros(())
        if self.use_jacobian:
            pred, jac = self.model.forward_with_input_jacobian(x)
            return pred, losses.grad_penalty_from_jacobian(jac)
        x = x.detach().requires_grad_(True)
        pred = self.model(x)
        return pred, losses.grad_penalty_double_backward(pred, x)

    @torch.no_grad()
    def validate(self) -> Tensor:
        """Validation MSE in training units (the plateau scheduler's signal)."""
        return (self.model(self.val_x) - self.val_yn).square().mean()


def make_engine(model: RegressionNet, cfg: TrainerConfig, opt: torch.optim.Optimizer,
                val_x: Tensor, val_yn: Tensor) -> StepEngine:
    """The step engine for this config and device (the eager one for now)."""
    return StepEngine(model, cfg, opt, val_x, val_yn)
