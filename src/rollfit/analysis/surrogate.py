"""``Surrogate``: a trained model for use: predict, gradient, labels and bounds.

``Surrogate.load`` takes a run folder (its newest checkpoint) or a checkpoint file, of
rollfit or of the original pipeline, and always predicts in original units. Inputs can be
an (N, D) array in ``in_lbl`` order, a dict label -> values, or a table with named columns
(a pandas DataFrame or a numpy structured array); a missing column is an error naming it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch

from ..errors import DataError, listing
from ..model.network import RegressionNet
from ..runs.checkpoint import load_model
from ..runs.folder import RunFolder

ArrayLike = Union[np.ndarray, Mapping[str, Any], Any]


class Surrogate:
    """A trained surrogate: raw inputs in, outputs in original units out."""

    def __init__(self, model: RegressionNet, config: dict[str, Any], checkpoint: Optional[Path] = None,
                 folder: Optional[RunFolder] = None):
        self.model = model.eval()
        self.config = config
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if folder is None and self.checkpoint is not None:
            folder = RunFolder.of_checkpoint(self.checkpoint)
        self.folder: Optional[RunFolder] = folder
        self.in_lbl: list[str] = list(config["in_lbl"])
        self.out_lbl: list[str] = list(config["out_lbl"])

    @classmethod
    def load(cls, run: str | Path | RunFolder, activation: Optional[str] = None) -> "Surrogate":
        """Load a run folder (its newest readable checkpoint) or a checkpoint file; ``activation``
        supplies what an original run without ``config.yaml`` lacks. A damaged newest
        checkpoint is skipped with a warning naming it."""
        folder = run if isinstance(run, RunFolder) else RunFolder.at(run)
        model, cfg, path = load_model(folder, activation)
        return cls(model, cfg, path, folder)

    @property
    def run_dir(self) -> Optional[Path]:
        """The run folder of the checkpoint (``RunFolder.of_checkpoint``: for a checkpoint
        outside a run folder, the folder beside it), if known."""
        return self.folder.root if self.folder is not None else None

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """Input ranges seen in training, label -> (min, max).

        Runs of the original pipeline store no ranges: mean +- 2 std of the inputs is used
        (marked by ``bounds_are_estimated``).
        """
        lo, hi = self._bounds_arrays()
        return {lbl: (float(a), float(b)) for lbl, a, b in zip(self.in_lbl, lo, hi)}

    @property
    def bounds_are_estimated(self) -> bool:
        """True when the checkpoint has no recorded input ranges."""
        return "input_min" not in self.config

    def _bounds_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.bounds_are_estimated:
            return np.asarray(self.config["input_min"], float), np.asarray(self.config["input_max"], float)
        mean, std = np.asarray(self.config["input_mean"], float), np.asarray(self.config["input_std"], float)
        return mean - 2 * std, mean + 2 * std

    # ---- inputs -----------------------------------------------------------------------
    def as_matrix(self, X: ArrayLike) -> np.ndarray:
        """Inputs as a float32 (N, D) array in ``in_lbl`` order."""
        columns = _columns_of(X)
        if columns is None:
            arr = np.atleast_2d(np.asarray(X, dtype=np.float32))
            if arr.shape[-1] != len(self.in_lbl):
                raise DataError(f"inputs: expected {len(self.in_lbl)} columns ({', '.join(self.in_lbl)}), "
                                f"but got shape {arr.shape}")
            return arr
        missing = [lbl for lbl in self.in_lbl if lbl not in columns]
        if missing:
            raise DataError(f"inputs: expected a column '{missing[0]}', but it is missing; "
                            f"columns present: {listing(list(columns), missing[0])}")
        return np.stack([np.asarray(columns[lbl], dtype=np.float32).reshape(-1) for lbl in self.in_lbl], axis=1)

    def _tensor(self, X: ArrayLike) -> torch.Tensor:
        return torch.as_tensor(self.as_matrix(X), device=self.model.input_mean.device)

    # ---- queries ----------------------------------------------------------------------
    def predict(self, X: ArrayLike) -> np.ndarray:
        """Outputs (N, K) in original units, columns in ``out_lbl`` order."""
        return self.model.predict(self._tensor(X)).cpu().numpy()

    def predict_dict(self, X: ArrayLike) -> dict[str, np.ndarray]:
        """Outputs as label -> (N,) array."""
        y = self.predict(X)
        return {lbl: y[:, k] for k, lbl in enumerate(self.out_lbl)}

    def gradient(self, X: ArrayLike) -> np.ndarray:
        """d outputs / d inputs in original units, shape (N, K, D)."""
        x = self._tensor(X)
        with torch.no_grad():
            y, jac = self.model.forward_with_input_jacobian(x)
        if self.model.target_convention == "normalized":
            jac = jac * self.model.target_std.view(1, -1, 1)
        return jac.cpu().numpy()

    def optimize(self, target: str, **kw: Any) -> Any:
        """Best inputs for ``target`` (see ``rollfit.analysis.optimize.optimize`` for the options)."""
        from .optimize import optimize

        return optimize(self, target, **kw)

    def sweep_optimum(self, target: str, vary: Mapping[str, Any], **kw: Any) -> Any:
        """The optimum along swept values (see ``rollfit.analysis.optimize.sweep_optimum``)."""
        from .optimize import sweep_optimum

        return sweep_optimum(self, target, vary, **kw)

    def __repr__(self) -> str:
        return f"Surrogate(in_lbl={self.in_lbl}, out_lbl={self.out_lbl}, checkpoint={self.checkpoint})"


def _columns_of(X: ArrayLike) -> Optional[Mapping[str, Any]]:
    """A name -> column mapping for dicts, DataFrames and structured arrays, else None."""
    if isinstance(X, Mapping):
        return X
    if isinstance(X, np.ndarray) and X.dtype.names:
        return {n: X[n] for n in X.dtype.names}
    if hasattr(X, "columns") and hasattr(X, "__getitem__"):  # pandas DataFrame, without importing pandas
        return {str(c): np.asarray(X[c]) for c in X.columns}
    return None
