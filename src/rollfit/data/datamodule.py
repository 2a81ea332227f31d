"""From a ``RolloutTable`` to training tensors: split, normalization statistics, device.

``HDF5DataModule`` keeps the whole data set resident on the training device as two
tensors per split; the trainer draws batches by index, so no per-sample ``Dataset`` or
``DataLoader`` sits in the hot loop. ``HDF5Dataset`` is the per-row torch ``Dataset`` for
users who want one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .reader import load_rollouts
from .table import RolloutTable

# A column is constant when its spread is below this fraction of its magnitude (float32 keeps
# ~7 digits, so a smaller spread is rounding, not information), or when it is exactly zero.
REL_STD = 1e-6
_F32_TINY = float(np.finfo(np.float32).tiny)


def constant_columns(values: np.ndarray) -> np.ndarray:
    """Boolean mask of columns without usable spread, judged relative to each column's scale.

    Scale-aware so that data in small units (targets of order 1e-9) keeps its spread: a column
    is constant when its std is non-finite, zero, below ``REL_STD`` times the column's largest
    magnitude, or too small to divide by in float32.
    """
    v = np.asarray(values, dtype=np.float64)
    std = v.std(axis=0, ddof=0)
    scale = np.abs(v).max(axis=0) if len(v) else np.zeros(v.shape[1:])
    return ~np.isfinite(std) | (std <= REL_STD * scale) | (std < _F32_TINY)


def normalization_stats(values: np.ndarray, labels: Sequence[str] | None = None,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and biased std; a constant column (``constant_columns``) gets std 1.0.

    With ``labels`` and at least two rows, each constant column gives one warning naming its
    label: the model cannot learn anything from (or about) such a column.
    """
    v = np.asarray(values, dtype=np.float64)
    mean = v.mean(axis=0)
    const = constant_columns(v)
    std = np.where(const, 1.0, v.std(axis=0, ddof=0))
    if labels is not None and len(v) >= 2:
        for j in np.flatnonzero(const):
            warnings.warn(f"column '{labels[j]}': expected values that vary, but got a constant column "
                          f"(std {v[:, j].std():.3g} at magnitude {np.abs(v[:, j]).max():.3g}); it is "
                          "treated as constant (std 1)", UserWarning, stacklevel=2)
    return mean.astype(np.float32), std.astype(np.float32)


def split_indices(n: int, train_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, val). 1.0: both are all rows; below 1: a seeded random split.

    Each row is one param group, so this is a split of param groups. At least one row
    stays on each side.
    """
    every = np.arange(n)
    if train_split >= 1.0 or n < 2:
        return every, every
    perm = np.random.default_rng(seed).permutation(n)
    k = min(max(int(round(train_split * n)), 1), n - 1)
    return np.sort(perm[:k]), np.sort(perm[k:])


@dataclass
class Split:
    """Resident tensors of one split: raw inputs x (N, D) and raw targets y (N, K)."""

    x: torch.Tensor
    y: torch.Tensor
    rows: np.ndarray

    def __len__(self) -> int:
        return self.x.shape[0]


class HDF5Dataset(Dataset):
    """A torch ``Dataset`` of (input, target) rows read from rollout file(s).

    Loads the table once (through the fast reader and its cache); ``__getitem__`` returns
    raw-unit float32 tensors.
    """

    def __init__(self, hdf5_path, in_lbl: Sequence[str], out_lbl: Sequence[str], **load_kwargs):
        self.table = load_rollouts(hdf5_path, list(in_lbl), list(out_lbl), **load_kwargs)
        self._x = torch.from_numpy(self.table.inputs)
        self._y = torch.from_numpy(self.table.targets)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._x[i], self._y[i]


class HDF5DataModule:
    """Split, statistics from the training rows, and tensors resident on ``device``.

    Build it from a loaded ``table`` (or from a path with ``from_path``), call ``setup()``;
    then ``train``/``val`` hold the tensors and ``input_mean`` etc. the statistics.
    """

    def __init__(self, table: RolloutTable, batch_size: int = 65536, train_split: float = 1.0,
                 split_seed: int = 0, device: str | torch.device = "cpu"):
        self.table, self.batch_size = table, int(batch_size)
        self.train_split, self.split_seed, self.device = float(train_split), int(split_seed), torch.device(device)
        self.train: Optional[Split] = None
        self.val: Optional[Split] = None

    @classmethod
    def from_path(cls, hdf5_path, in_lbl: Sequence[str], out_lbl: Sequence[str], batch_size: int = 65536,
                  train_split: float = 1.0, split_seed: int = 0, device="cpu", **load_kwargs) -> "HDF5DataModule":
        """Read rollout file(s) and wrap them (the original pipeline's entry point)."""
        table = load_rollouts(hdf5_path, list(in_lbl), list(out_lbl), **load_kwargs)
        return cls(table, batch_size, train_split, split_seed, device)

    def setup(self) -> "HDF5DataModule":
        """Split rows, compute statistics on the training rows, move tensors to the device."""
        tr, va = split_indices(len(self.table), self.train_split, self.split_seed)
        self.train, self.val = self._split(tr), self._split(va)
        self.input_mean, self.input_std = normalization_stats(self.table.inputs[tr], self.table.in_lbl)
        self.target_mean, self.target_std = normalization_stats(self.table.targets[tr], self.table.out_lbl)
        self.input_min = self.table.inputs[tr].min(axis=0)
        self.input_max = self.table.inputs[tr].max(axis=0)
        return self

    def _split(self, rows: np.ndarray) -> Split:
        x = torch.as_tensor(self.table.inputs[rows], dtype=torch.float32, device=self.device)
        y = torch.as_tensor(self.table.targets[rows], dtype=torch.float32, device=self.device)
        return Split(x, y, rows)

    @property
    def same_split(self) -> bool:
        """True when training and validation rows are the same (train_split 1.0)."""
        return self.train is not None and self.val is not None and np.array_equal(self.train.rows, self.val.rows)

    def stats(self) -> dict[str, list[float]]:
        """Normalization statistics as plain lists (for checkpoints)."""
        return {k: np.asarray(getattr(self, k)).astype(float).tolist()
                for k in ("input_mean", "input_std", "target_mean", "target_std", "input_min", "input_max")}
