"""``DevicePlateau``: torch's ReduceLROnPlateau with its state on the device, no host sync.

torch's scheduler reads the validation loss as a Python float (a sync per epoch, costlier
on a GPU than a captured step) and keeps the lr as one (a captured graph would bake it in).
This subclass keeps ``best``, the bad-epoch count and the lr as device tensors updated by
tensor operations, so it runs inside the captured graph and Adam reads the new lr there.
It mirrors torch's decisions for the trainer's setting (mode ``min``, relative threshold,
no cooldown; comparisons in float64 as torch's). ``state_dict`` has torch's format (either
class loads it); ``get_last_lr()`` is refreshed only there (reading it is the sync avoided).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau


class DevicePlateau(ReduceLROnPlateau):
    """ReduceLROnPlateau(mode=min, threshold_mode=rel, cooldown=0) stepped on the device."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float, patience: int, threshold: float,
                 min_lr: float):
        super().__init__(optimizer, mode="min", factor=factor, patience=patience, threshold=threshold,
                         threshold_mode="rel", min_lr=min_lr)
        lr = optimizer.param_groups[0]["lr"]
        if len(optimizer.param_groups) != 1 or not isinstance(lr, Tensor):
            raise TypeError("DevicePlateau: expected one param group with a tensor lr")
        self._lr = lr
        dev = lr.device
        self._best = torch.tensor(float(self.best), dtype=torch.float64, device=dev)
        self._bad = torch.zeros((), dtype=torch.int64, device=dev)
        self._applied: Optional[Tensor] = None

    # ---- stepping -----------------------------------------------------------------------------
    def device_step(self, metrics: Tensor) -> None:
        """One scheduler step on the device (capturable: no host synchronization)."""
        cur = metrics.detach().reshape(()).to(torch.float64)
        better = cur < self._best * (1.0 - self.threshold)
        self._best.copy_(torch.where(better, cur, self._best))
        bad = torch.where(better, torch.zeros_like(self._bad), self._bad + 1)
        reduce = bad > self.patience
        old = self._lr.to(torch.float64)
        new = torch.clamp(old * self.factor, min=float(self.min_lrs[0]))
        self._lr.copy_(torch.where(reduce & (old - new > self.eps), new, old))
        self._bad.copy_(torch.where(reduce, torch.zeros_like(bad), bad))

    def mark_applied(self, metrics: Tensor) -> None:
        """``metrics`` was already stepped on (inside a captured epoch); ``step(metrics)`` will
        only count the epoch."""
        self._applied = metrics

    def step(self, metrics: Any, epoch: Optional[int] = None) -> None:  # type: ignore[override]
        """Like torch's ``step``, without reading ``metrics`` on the host."""
        if epoch is not None:
            raise TypeError("DevicePlateau.step: expected no epoch argument (deprecated in torch)")
        if metrics is not self._applied:
            self.device_step(torch.as_tensor(metrics, device=self._lr.device))
        self._applied = None
        self.last_epoch += 1

    # ---- state ----------------------------------------------------------------------------------
    def sync_to_host(self) -> None:
        """Copy the device state into torch's attributes (one synchronization)."""
        self.best = float(self._best)
        self.num_bad_epochs = int(self._bad)
        self._last_lr = [float(self._lr)]

    def state_dict(self) -> dict[str, Any]:
        """torch's ReduceLROnPlateau state (device values copied in first)."""
        self.sync_to_host()
        return {k: v for k, v in super().state_dict().items() if k not in ("_lr", "_best", "_bad", "_applied")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load torch's ReduceLROnPlateau state and push it to the device."""
        super().load_state_dict(state_dict)
        with torch.no_grad():
            self._best.fill_(float(self.best))
            self._bad.fill_(int(self.num_bad_epochs))
        self._applied = None
