"""``Trainer``: Adam + ReduceLROnPlateau over resident tensors, with the seed's loss.

The loop reads top-down: ``fit`` runs epochs; ``_train_epoch`` takes optimizer steps over
index batches through the step engine (``step.py``), whose ``validate`` gives the
validation MSE in training units (the plateau scheduler's signal); logging and
checkpoints happen at their periods. Losses are
kept as tensors and only turned into floats at log periods, so the loop does not wait on
the device every step.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from ..config import TrainerConfig
from ..data.datamodule import HDF5DataModule
from ..model.network import RegressionNet
from .checkpoint import CKPT_DIR, checkpoint_name, save_checkpoint
from .logger import SimpleLogger
from .step import COMPONENTS, make_engine


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from ..errors import ConfigError

        raise ConfigError("trainer.device: expected a usable CUDA device for 'cuda', but torch sees none; "
                          "use trainer.device=cpu or auto")
    return torch.device(name)


class Trainer:
    """Train a ``RegressionNet`` on an ``HDF5DataModule`` into ``run_dir``."""

    def __init__(self, model: RegressionNet, cfg: TrainerConfig, data: HDF5DataModule, run_dir: str | Path,
                 logger: Optional[SimpleLogger] = None, meta: Optional[dict[str, Any]] = None,
                 on_log: Optional[Callable[[int, dict[str, float]], None]] = None):
        self.cfg, self.data, self.run_dir = cfg, data, Path(run_dir)
        self.on_log = on_log  # called with (epoch, logged row) after each log flush (e.g. sweeps report)
        self.device = data.device
        self.model = model.to(self.device)
        self.logger = logger or SimpleLogger(self.run_dir / "logs")
        self.meta = meta or {}
        self.params = [p for p in self.model.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience,
            threshold=cfg.lr_threshold, threshold_mode="rel", min_lr=cfg.min_lr)
        self.start_epoch = 0
        self._yn_train = self._normalize_targets(data.train.y)
        yn_val = self._yn_train if data.same_split else self._normalize_targets(data.val.y)
        self.engine = make_engine(self.model, cfg, self.opt, data.val.x, yn_val)
        self.history: list[dict[str, float]] = []

    def _normalize_targets(self, y: Tensor) -> Tensor:
        m = self.model
        return (y - m.target_mean) / m.target_std if m.target_convention == "normalized" else y

    # ---- the loop ---------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train from ``start_epoch`` to ``max_epochs``; returns the last logged metrics."""
        cfg, last = self.cfg, self.cfg.max_epochs - 1
        bar = self._progress()
        metrics: dict[str, float] = {}
        for epoch in range(self.start_epoch, cfg.max_epochs):
            train = self._train_epoch(epoch)
            val = self.engine.validate()
            self.sched.step(val)
            if epoch % cfg.log_period == 0 or epoch == last:
                metrics = self._log(epoch, train, val, bar)
            if epoch % cfg.save_period == 0 or epoch == last:
                self.save(epoch)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return metrics

    def _train_epoch(self, epoch: int) -> dict[str, Tensor]:
        """One pass over the training rows; returns row-weighted mean loss components."""
        x, y = self.data.train.x, self._yn_train
        n, bs = x.shape[0], self.data.batch_size
        if n <= bs:
            return self.engine.step(x, y, epoch)
        perm = torch.randperm(n, device=self.device)
        sums: dict[str, Tensor] = {}
        for k in range(0, n, bs):
            idx = perm[k:k + bs]
            out = self.engine.step(x[idx], y[idx], epoch)
            for name, v in out.items():
                sums[name] = sums.get(name, 0.0) + v * idx.numel()
        return {name: v / n for name, v in sums.items()}

    # ---- logging and checkpoints --------------------------------------------------------
    def _log(self, epoch: int, train: dict[str, Tensor], val: Tensor, bar) -> dict[str, float]:
        row = {"loss/train": float(train["train"]), "loss/val": float(val),
               **{f"loss/{k}": float(train[k]) for k in COMPONENTS}, "lr": self.opt.param_groups[0]["lr"]}
        self.logger.log_metrics(row, step=epoch)
        self.logger.flush()
        self.history.append({"epoch": epoch, **row})
        if self.on_log is not None:
            self.on_log(epoch, row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss/train']:.4g}", val=f"{row['loss/val']:.4g}", lr=f"{row['lr']:.2g}",
                            refresh=False)
        return row

    def state_dict(self, epoch: int) -> dict[str, Any]:
        """The checkpoint dict (seed format plus rollfit's config additions)."""
        return {"epoch": epoch, "model_state_dict": self.model.state_dict(),
                "optimizer_state_dict": self.opt.state_dict(), "scheduler_state_dict": self.sched.state_dict(),
                "config": {**self.model.constructor_args(), **self.meta}}

    def save(self, epoch: int) -> Path:
        """Write ``checkpoints/ep_NNNNNN.ckpt`` atomically."""
        return save_checkpoint(self.run_dir / CKPT_DIR / checkpoint_name(epoch), self.state_dict(epoch))

    def _progress(self):
        if not self.cfg.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.cfg.max_epochs, initial=self.start_epoch, desc="train", unit="ep",
                    mininterval=0.5, dynamic_ncols=True)
