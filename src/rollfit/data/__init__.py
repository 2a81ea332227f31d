"""rollfit.data: rollout files -> a ``RolloutTable`` -> resident training tensors.

``load_rollouts`` (fast low-level reader, many files, per-file cache), ``RolloutTable``,
``HDF5DataModule`` / ``HDF5Dataset`` (split, statistics), ``summarize_rollouts`` (inspect)
and the real-format writers of ``synthetic`` (tests, demo, benchmarks).
"""
from .reader import load_rollouts
from .table import RolloutTable

__all__ = ["load_rollouts", "RolloutTable"]
