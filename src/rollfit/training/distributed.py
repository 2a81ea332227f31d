"""Training strategies: ``Local`` (one process) and ``DistContext`` (data parallel under torchrun).

Both offer what the Trainer calls, with no branches on which one it holds: ``is_writer``,
``shard``, ``attach``, ``train_epoch``, ``agree``, ``same_path`` and ``finish``.

Under torchrun (docs/guide.md, Distributed training) every rank builds the same model (rank
0's weights are broadcast anyway) and holds its share of the rows. Full batch: rank r keeps
training rows ``r::N`` and weights its mean loss by ``local_rows / rows``, so the summed
gradient is the one-process gradient up to float summation order (L1/L2 weights sum to 1:
they count once). Mini-batch: every rank draws the trainer's permutation, so the global
batches are a one-process run's, and computes rows ``r::N`` of each, weighted by its share.

Gradients are summed by one flat all-reduce in an optimizer step pre-hook (no DDP wrapper:
the engine's own gradient is used as it is); an engine that steps outside ``opt.step()`` (a
replayed CUDA graph) is refused at its first step. The validation MSE and the per-epoch
decisions (a checkpoint is due, a signal arrived) share one all-reduce, so all ranks step
one schedule and save, roll back and stop at the same epoch. Rank 0 alone writes files;
checkpoints hold the full state and the split is deterministic, so a run resumes with any
number of processes.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, TrainingError
from .logger import SimpleLogger
from .signals import HANDLED as SIGNALS
from .step import COMPONENTS, Losses, as_dict, batch_loop

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class Share:
    """A rank's rows of one split: global row positions and the weight of its mean loss."""

    positions: np.ndarray
    weight: float


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) outside torchrun."""
    try:
        values = [int(os.environ.get(k, d)) for k, d in zip(ENV_KEYS, ("0", "1", "0"))]
    except ValueError:
        found = ", ".join(f"{k}={os.environ.get(k)!r}" for k in ENV_KEYS)
        raise ConfigError(f"torchrun environment: expected integer {', '.join(ENV_KEYS)}, but got {found}") from None
    rank, world, local = values
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"torchrun environment: expected 0 <= RANK < WORLD_SIZE, but got RANK={rank}, "
                          f"WORLD_SIZE={world}")
    return rank, world, local


def share(n: int, rank: int, world: int) -> Share:
    """Rows ``rank::world`` of ``n`` with weight local/n; all rows with weight 1/world when
    ``n < world`` (no rank may be left without rows: the mean of nothing is NaN)."""
    if n < world:
        return Share(np.arange(n), 1.0 / world)
    positions = np.arange(rank, n, world)
    return Share(positions, len(positions) / n)


class Local:
    """One process: all rows, no collectives, this process writes the files."""

    is_writer, world = True, 1

    def shard(self, data):
        return data

    def attach(self, trainer) -> None:
        """Nothing to synchronize."""

    def train_epoch(self, trainer, epoch: int) -> dict[str, Tensor]:
        """A full-batch update, or the engine's shuffled mini-batch epoch."""
        x, y, bs = trainer.data.train.x, trainer._yn_train, trainer.data.batch_size
        if x.shape[0] <= bs:
            return trainer.engine.step(x, y, epoch)
        return trainer.engine.train_epoch(x, y, epoch, bs, trainer.shuffle_gen)

    def agree(self, train: dict[str, Tensor], val: Tensor, save: bool, guard) -> tuple[dict[str, Tensor], Tensor, bool]:
        return train, val, save

    def same_path(self, path: Optional[Path]) -> Optional[Path]:
        return path

    def finish(self) -> None:
        """Nothing to leave."""


class DistContext:
    """This process's place in the group and the collectives the trainer needs."""

    def __init__(self, rank: int, world: int, local_rank: int, device: torch.device):
        self.rank, self.world, self.local_rank, self.device = rank, world, local_rank, device
        self.is_writer = rank == 0  # rank 0 alone writes files
        self.full_batch = True
        self._deferred: Optional[int] = None  # a signal that arrived during an all-reduce: next epoch
        self.train_weight = self.val_weight = self._step_weight = 1.0

    # ---- setup --------------------------------------------------------------------------
    def shard(self, data):
        """A copy of the data module holding this rank's rows (training rows only in full batch)."""
        from ..data.datamodule import Split

        def cut(split, s: Share) -> Split:
            pos = torch.as_tensor(s.positions, device=split.x.device)
            return Split(split.x[pos], split.y[pos], split.rows[s.positions])

        out = copy.copy(data)  # tensors shared, splits replaced below
        n_train = len(data.train)
        self.full_batch = n_train <= data.batch_size
        if self.full_batch:
            tr = share(n_train, self.rank, self.world)
            out.train, self.train_weight = cut(data.train, tr), tr.weight
        va = share(len(data.val), self.rank, self.world)
        out.val, self.val_weight = cut(data.val, va), va.weight
        return out

    def attach(self, trainer) -> None:
        """Broadcast rank 0's weights and all-reduce gradients before every optimizer step
        (a pre-hook, so any engine whose step calls ``opt.step()`` works: eager, fused)."""
        import torch.distributed as dist

        with torch.no_grad():
            for p in trainer.model.parameters():
                dist.broadcast(p.data, src=0)
        self._params = [p for group in trainer.opt.param_groups for p in group["params"]]
        self._reduced = 0  # optimizer steps seen by the hook (each must be seen: see _step)
        trainer.opt.register_step_pre_hook(self._all_reduce_grads)

    def _checked(self, engine, update):
        """``update()``, refusing an engine that changed the weights without ``opt.step()``
        (e.g. a replayed CUDA graph): its ranks would silently drift apart."""
        before = self._reduced
        out = update()
        if self._reduced == before:
            raise TrainingError(f"distributed training: expected the step engine to call optimizer.step() "
                                f"(where gradients are all-reduced), but {type(engine).__name__} did not; "
                                f"use trainer.engine=reference under torchrun")
        return out

    # ---- collectives ----------------------------------------------------------------------
    def _all_reduce_grads(self, opt, args, kwargs) -> None:
        """grad <- sum over ranks of (weight_r * grad_r): the global gradient on every rank."""
        import torch.distributed as dist

        self._reduced += 1
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(self._step_weight)
        dist.all_reduce(flat)
        offset = 0
        for p in self._params:
            view = flat[offset:offset + p.numel()].view_as(p)
            if p.grad is None:
                p.grad = view.clone()
            else:
                p.grad.copy_(view)
            offset += p.numel()

    def train_epoch(self, trainer, epoch: int) -> dict[str, Tensor]:
        """One epoch of this rank's share; returns its contributions to the global means
        (summed across ranks in ``agree``)."""
        x, y, engine = trainer.data.train.x, trainer._yn_train, trainer.engine
        if self.full_batch:
            self._step_weight = self.train_weight
            out = self._checked(engine, lambda: engine.step(x, y, epoch))
            return {k: v * self.train_weight for k, v in out.items()}
        perm = torch.randperm(x.shape[0], device=x.device, generator=trainer.shuffle_gen)
        return as_dict(*batch_loop(lambda idx: self._share(trainer, idx, epoch), perm, trainer.data.batch_size))

    def _share(self, trainer, idx: Tensor, epoch: int) -> Losses:
        """This rank's rows ``idx[rank::world]`` of a global batch, weighted by their share of it."""
        x, y, engine = trainer.data.train.x, trainer._yn_train, trainer.engine
        mine = idx[self.rank::self.world]
        self._step_weight = mine.numel() / idx.numel()
        if mine.numel() == 0:  # a last batch smaller than the group: contribute zero gradients
            trainer.opt.zero_grad(set_to_none=False)  # in place: engines may alias .grad
            trainer.opt.step()
            return x.new_zeros(()), x.new_zeros(len(COMPONENTS))
        total, parts = self._checked(engine, lambda: engine.batch(x, y, mine, epoch))
        return total * self._step_weight, parts * self._step_weight

    def agree(self, train: dict[str, Tensor], val: Tensor, save: bool, guard) -> tuple[dict[str, Tensor], Tensor, bool]:
        """One all-reduce per epoch: global train losses and validation MSE, and one decision
        for all ranks on checkpointing (any rank due) and stopping (any rank signalled)."""
        import torch.distributed as dist

        keys = list(train)
        requested = getattr(guard, "requested", None)
        if requested is None and self._deferred is not None:
            requested, self._deferred = self._deferred, None
        flags = [float(save)] + [float(requested == s) for s in SIGNALS]
        vec = torch.stack([train[k].reshape(()).float() for k in keys] + [val.reshape(()).float() * self.val_weight])
        vec = torch.cat([vec, torch.tensor(flags, device=vec.device)])
        dist.all_reduce(vec)
        got = vec.tolist()
        hits = [s for s, f in zip(SIGNALS, got[len(keys) + 2:]) if f > 0]
        if hits and getattr(guard, "requested", None) is None:
            guard.requested = hits[0]
        elif not hits and getattr(guard, "requested", None) is not None:
            # it arrived during the all-reduce, which the other ranks left without it: stopping
            # now would leave them waiting in the next epoch's all-reduce; all stop after the next
            self._deferred, guard.requested = guard.requested, None
        reduced = {k: vec[i] for i, k in enumerate(keys)}
        return reduced, vec[len(keys)], got[len(keys) + 1] > 0

    def same_path(self, path: Optional[Path]) -> Optional[Path]:
        """Rank 0's value of ``path`` on every rank (e.g. a new rollfit_runs/version_N)."""
        import torch.distributed as dist

        box = [str(path) if path is not None else None]
        dist.broadcast_object_list(box, src=0)
        return Path(box[0]) if box[0] is not None else None

    def finish(self) -> None:
        """Wait for every rank (rank 0 writes the last files), then leave the group."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


class QuietLogger(SimpleLogger):
    """The logger of ranks other than 0: rows kept in memory, nothing written."""

    def flush(self) -> None:
        pass

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        pass


def from_env(device_name: str = "auto") -> Optional[DistContext]:
    """Join the torchrun group when launched with WORLD_SIZE > 1, else None (a plain run).

    On CUDA each process uses device ``LOCAL_RANK`` and nccl; on CPU gloo.
    """
    rank, world, local = env_world()
    if world == 1:
        return None
    import torch.distributed as dist

    from .step import resolve_device

    if device_name != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local % torch.cuda.device_count())
    device = resolve_device(device_name)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local, device)
