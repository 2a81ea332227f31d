"""``Surrogate``: a trained model for use: predict (with an uncertainty), gradient, labels and bounds.

``Surrogate.load`` takes a run folder (its best.ckpt, else newest checkpoint) or a checkpoint file, of
rollfit or of the original pipeline, of any model kind (``model.kinds``), and always
predicts in original units. Inputs can be an (N, D) array in ``in_lbl`` order, a dict
label -> values, or a table with named columns (a pandas DataFrame or a numpy structured
array); a missing column is an error naming it. Kinds with an uncertainty (``has_std``)
also give the standard deviation of a new observation (``predict(X, return_std=True)``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch

from ..errors import DataError, listing
from ..model.kinds import Predictor, kind_spec, require_std
from ..runs.checkpoint import load_model
from ..runs.folder import RunFolder

ArrayLike = Union[np.ndarray, Mapping[str, Any], Any]


class Surrogate:
    """A trained surrogate: raw inputs in, outputs in original units out."""

    def __init__(self, model: Predictor, config: dict[str, Any], checkpoint: Optional[Path] = None,
                 folder: Optional[RunFolder] = None):
        self.model: Predictor = model.eval()
        self.config = config
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if folder is None and self.checkpoint is not None:
            folder = RunFolder.of_checkpoint(self.checkpoint)
        self.folder: Optional[RunFolder] = folder
        self.in_lbl: list[str] = list(config["in_lbl"])
        self.out_lbl: list[str] = list(config["out_lbl"])

    @classmethod
    def load(cls, run: str | Path | RunFolder, activation: Optional[str] = None) -> "Surrogate":
        """Load a run folder (its ``checkpoints/best.ckpt``, else its newest readable checkpoint)
        or a checkpoint file; ``activation`` supplies what an original run without
        ``config.yaml`` lacks. A damaged best or newest checkpoint is skipped with a warning
        naming it."""
        folder = run if isinstance(run, RunFolder) else RunFolder.at(run)
        model, cfg, path = load_model(folder, activation)
        return cls(model, cfg, path, folder)

    @property
    def kind(self) -> str:
        """The model kind (``mlp``, ``ensemble``, ``gp``...): the module's own ``kind``."""
        return str(getattr(self.model, "kind", "mlp"))

    @property
    def has_std(self) -> bool:
        """True when the model kind predicts an uncertainty (``predict(X, return_std=True)``)."""
        return kind_spec(self.kind).has_std

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
        """Inputs as an (N, D) array in ``in_lbl`` order, in the model's float type (float32
        for networks, float64 for Gaussian processes, so no digits are lost on the way)."""
        dtype = np.float64 if self.model.input_mean.dtype == torch.float64 else np.float32
        columns = _columns_of(X)
        if columns is None:
            arr = np.atleast_2d(np.asarray(X, dtype=dtype))
            if arr.shape[-1] != len(self.in_lbl):
                raise DataError(f"inputs: expected {len(self.in_lbl)} columns ({', '.join(self.in_lbl)}), "
                                f"but got shape {arr.shape}")
            return arr
        missing = [lbl for lbl in self.in_lbl if lbl not in columns]
        if missing:
            raise DataError(f"inputs: expected a column '{missing[0]}', but it is missing; "
                            f"columns present: {listing(list(columns), missing[0])}")
        return np.stack([np.asarray(columns[lbl], dtype=dtype).reshape(-1) for lbl in self.in_lbl], axis=1)

    def _tensor(self, X: ArrayLike) -> torch.Tensor:
        ref = self.model.input_mean
        return torch.as_tensor(self.as_matrix(X), dtype=ref.dtype, device=ref.device)

    # ---- queries ----------------------------------------------------------------------
    def predict(self, X: ArrayLike, return_std: bool = False) -> Union[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Outputs (N, K) in original units, columns in ``out_lbl`` order.

        ``return_std=True``: (mean, std), both (N, K) in original units, std being the
        standard deviation of a new observation at each input (model uncertainty plus noise:
        mean +- 1.96 std is a 95% interval for a new row); kinds without an uncertainty raise
        a one-line ``ConfigError`` naming the kinds that have one.
        """
        x = self._tensor(X)
        if not return_std:
            return self.model.predict(x).cpu().numpy()
        require_std(self.kind)
        with torch.no_grad():
            mean, std = self.model.predict_std(x)
        return mean.cpu().numpy(), std.cpu().numpy()

    def predict_dict(self, X: ArrayLike, return_std: bool = False
                     ) -> Union[dict[str, np.ndarray], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Outputs as label -> (N,) array; ``return_std=True``: (means, stds), two such dicts."""
        if not return_std:
            y = self.predict(X)
            return {lbl: y[:, k] for k, lbl in enumerate(self.out_lbl)}
        mean, std = self.predict(X, return_std=True)
        return ({lbl: mean[:, k] for k, lbl in enumerate(self.out_lbl)},
                {lbl: std[:, k] for k, lbl in enumerate(self.out_lbl)})

    def gradient(self, X: ArrayLike) -> np.ndarray:
        """d outputs / d inputs in original units, shape (N, K, D), of the predicted mean.

        Autograd of the model's ``forward`` (original units for every kind), one backward
        pass per output; rows are independent, so the gradient of a column's sum is each
        row's gradient.
        """
        x = self._tensor(X).requires_grad_(True)
        with torch.enable_grad():
            y = self.model(x)
            cols = [torch.autograd.grad(y[:, k].sum(), x, retain_graph=k < y.shape[1] - 1, allow_unused=True)[0]
                    for k in range(y.shape[1])]
        jac = torch.stack([torch.zeros_like(x) if c is None else c for c in cols], dim=1)
        return jac.detach().cpu().numpy()

    def optimize(self, target: str, **kw: Any) -> Any:
        """Best inputs for ``target`` (see ``rollfit.analysis.optimize.optimize`` for the options)."""
        from .optimize import optimize

        return optimize(self, target, **kw)

    def sweep_optimum(self, target: str, vary: Mapping[str, Any], **kw: Any) -> Any:
        """The optimum along swept values (see ``rollfit.analysis.optimize.sweep_optimum``)."""
        from .optimize import sweep_optimum

        return sweep_optimum(self, target, vary, **kw)

    def suggest(self, n: int, **kw: Any) -> Any:
        """The next ``n`` points to simulate (see ``rollfit.analysis.suggest.suggest`` for the options)."""
        from .suggest import suggest

        return suggest(self, n, **kw)

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
