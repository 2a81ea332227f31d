"""``RolloutTable``: the rows a loader extracted from rollout files, as plain numpy arrays.

A table is what every later stage (split, normalization, training, evaluation) starts from.
It keeps the provenance of each row (file and ``param_N`` index) so that a bad prediction
can be traced back to the group it came from, and the counts of what was left out, so that
a silently shrinking data set is visible.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

MAX_SKIPPED_SHOWN = 10


@dataclass
class RolloutTable:
    """Rows of (inputs, targets) with provenance and counts of what was left out.

    ``inputs`` (N, D) float32 in ``in_lbl`` order; ``targets`` (N, K) float32 in ``out_lbl``
    order; ``param_idx`` (N,) the N of each row's ``param_N`` group; ``source`` (N,) index
    into ``files``. ``out_attr`` are the attribute names the output labels resolved to.
    ``n_groups`` counts every param group read, ``n_failed`` those with success false,
    ``n_skipped`` those dropped by an ``on_missing``/``on_nonfinite`` policy of ``skip``;
    ``skipped`` holds the first few reasons, each the one-line message policy ``error``
    would have raised (``"<file>: <group>: expected ..., but ..."``).
    """

    inputs: np.ndarray
    targets: np.ndarray
    param_idx: np.ndarray
    source: np.ndarray
    files: list[str]
    in_lbl: list[str]
    out_lbl: list[str]
    out_attr: list[str]
    n_groups: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Normalize dtypes and check that all row arrays agree (a table is never ragged)."""
        self.inputs = _rows("inputs", self.inputs, len(self.in_lbl))
        self.targets = _rows("targets", self.targets, len(self.out_lbl))
        self.param_idx = np.asarray(self.param_idx, dtype=np.int64)
        self.source = np.asarray(self.source, dtype=np.int32)
        sizes = {len(self.inputs), len(self.targets), len(self.param_idx), len(self.source)}
        if len(sizes) != 1:
            raise ValueError(
                "RolloutTable: inputs, targets, param_idx and source must have one row count, "
                f"but got {len(self.inputs)}, {len(self.targets)}, {len(self.param_idx)}, {len(self.source)}"
            )

    def __len__(self) -> int:
        """Number of rows (successful, kept groups)."""
        return len(self.inputs)

    def group_names(self) -> list[str]:
        """``param_N`` name of each row (numeric form, whatever the writer's spelling)."""
        return [f"param_{i}" for i in self.param_idx.tolist()]

    def subset(self, idx: np.ndarray | Sequence[int] | slice) -> "RolloutTable":
        """A table of the selected rows (index array, boolean mask or slice); counts are kept."""
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.dtype != bool:
                idx = idx.astype(np.int64)
        return RolloutTable(
            self.inputs[idx], self.targets[idx], self.param_idx[idx], self.source[idx],
            list(self.files), list(self.in_lbl), list(self.out_lbl), list(self.out_attr),
            self.n_groups, self.n_failed, self.n_skipped, list(self.skipped),
        )

    @classmethod
    def concat(cls, tables: Sequence["RolloutTable"]) -> "RolloutTable":
        """Rows of several tables with the same labels, in order; files and counts are merged.

        ``source`` indices are re-mapped onto the merged ``files`` list (a file present in two
        tables keeps one index).
        """
        if not tables:
            raise ValueError("RolloutTable.concat: expected at least one table, but got none")
        first = tables[0]
        for t in tables[1:]:
            if (t.in_lbl, t.out_lbl, t.out_attr) != (first.in_lbl, first.out_lbl, first.out_attr):
                raise ValueError(
                    "RolloutTable.concat: expected tables with the same labels, but got "
                    f"{first.in_lbl}->{first.out_lbl} and {t.in_lbl}->{t.out_lbl}"
                )
        files: list[str] = []
        sources = []
        for t in tables:
            remap = np.array([_index_of(files, f) for f in t.files] or [0], dtype=np.int32)
            sources.append(remap[t.source])
        return cls(
            np.concatenate([t.inputs for t in tables]), np.concatenate([t.targets for t in tables]),
            np.concatenate([t.param_idx for t in tables]), np.concatenate(sources),
            files, list(first.in_lbl), list(first.out_lbl), list(first.out_attr),
            sum(t.n_groups for t in tables), sum(t.n_failed for t in tables),
            sum(t.n_skipped for t in tables),
            [s for t in tables for s in t.skipped][:MAX_SKIPPED_SHOWN],
        )

    def summary(self) -> str:
        """One line for logs: rows, groups, failures, skips and files."""
        return (f"{len(self)} rows from {self.n_groups} groups in {len(self.files)} file(s) "
                f"({self.n_failed} failed, {self.n_skipped} skipped)")


def _index_of(items: list[str], item: str) -> int:
    """Index of ``item`` in ``items``, appending it first if absent."""
    if item not in items:
        items.append(item)
    return items.index(item)


def _rows(what: str, a: np.ndarray, ncols: int) -> np.ndarray:
    """``a`` as a C-contiguous (N, ncols) float32 array (a 1-D array is one column)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim == 1 and ncols == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] != ncols:
        raise ValueError(f"RolloutTable: expected {what} of shape (N, {ncols}), but got {a.shape}")
    return a
