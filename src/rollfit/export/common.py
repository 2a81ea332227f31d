"""What every export format shares: the exported function, its description, the check, the sidecar.

The exported function is always "raw inputs in, outputs in original units out", whatever
convention the checkpoint's weights use (``UnitsModel``). ``ExportInfo`` describes the
source (labels, input bounds, architecture, checkpoint hash) for the formats' headers and
metadata and for the JSON sidecar. ``relative_error`` is the measure the self-check uses.
"""
from __future__ import annotations

import hashlib
import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..errors import ConfigError

C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "_Bool _Complex _Imaginary bool class delete new namespace operator private protected public template this "
    "throw try catch virtual".split())
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnitsModel(nn.Module):
    """Raw inputs (N, D) -> outputs in original units (N, K); normalization inside.

    Wraps a trained model of any kind (``net``): ``forward(x)`` is its mean in original units
    (``RegressionNet`` scales by ``target_std``/``target_mean`` only for the normalized
    convention, never for raw-convention original runs). The formats export
    ``export_module()``, the plain torch module the kind gives for its mean
    (``RegressionNet``: itself; ``EnsembleNet``: the members' average; GPs: the kernel sum).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # every kind's forward returns the mean in original units

    def export_module(self) -> nn.Module:
        """The plain module ONNX and pt2 trace: the kind's own (``model.export_module()``)."""
        return self.net.export_module()


@dataclass
class ExportInfo:
    """The exported model's description: names, ranges, architecture, provenance."""

    name: str
    in_lbl: list[str]
    out_lbl: list[str]
    lo: np.ndarray
    hi: np.ndarray
    bounds_estimated: bool
    layers: list[int]
    residual: bool
    activation: str
    target_convention: str
    checkpoint: Path
    checkpoint_sha256: str
    original_pipeline: bool
    rollfit_version: str = __version__

    kind: str = "mlp"

    @classmethod
    def from_surrogate(cls, s: Any, name: str) -> "ExportInfo":
        """From a loaded ``Surrogate`` (its config, bounds and checkpoint file)."""
        from ..model.kinds import kind_of
        from ..runs.checkpoint import is_original

        bounds = s.bounds
        return cls(name=name, in_lbl=list(s.in_lbl), out_lbl=list(s.out_lbl),
                   lo=np.array([bounds[k][0] for k in s.in_lbl]), hi=np.array([bounds[k][1] for k in s.in_lbl]),
                   bounds_estimated=bool(s.bounds_are_estimated), layers=list(s.config["layers"]),
                   residual=bool(s.config["residual"]), activation=str(s.config["activation"]),
                   target_convention=str(s.config["target_convention"]), checkpoint=Path(s.checkpoint).resolve(),
                   checkpoint_sha256=sha256_file(s.checkpoint), original_pipeline=is_original({"config": s.config}),
                   kind=kind_of(s.config))

    def bounds_dict(self) -> dict[str, list[float]]:
        """label -> [low, high] of the inputs (training range, or mean +- 2 std when estimated)."""
        return {k: [float(a), float(b)] for k, a, b in zip(self.in_lbl, self.lo, self.hi)}

    @property
    def range_kind(self) -> str:
        """How the input bounds were obtained, for the texts that show them."""
        return "estimated range (mean +- 2 std)" if self.bounds_estimated else "training range"

    def describe(self) -> str:
        """One line for headers and doc strings."""
        ins = ", ".join(f"{k} [{a:.6g}, {b:.6g}]" for k, a, b in zip(self.in_lbl, self.lo, self.hi))
        return (f"rollfit {self.rollfit_version} surrogate; inputs (raw units, in this order, {self.range_kind}): "
                f"{ins}; outputs (original units): {', '.join(self.out_lbl)}")


def check_kind_exports(kind: str, fmt: str) -> None:
    """A one-line ``ConfigError`` when model kind ``kind`` cannot be exported as ``fmt``,
    naming the kinds that can."""
    from ..model.kinds import kind_spec, kinds_exporting

    if fmt not in kind_spec(kind).exports:
        raise ConfigError(f"--format {fmt}: expected a run of a kind that exports to {fmt} "
                          f"({', '.join(kinds_exporting(fmt))}), but this run is '{kind}'")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sample_inputs(lo: np.ndarray, hi: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 points uniform in the box [lo, hi], the two corners included."""
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    x = lo + rng.random((max(n, 2), lo.size)) * (hi - lo)
    x[0], x[1] = lo, hi
    return x.astype(np.float32)


def relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    """Max over outputs of max |y - ref| / max |ref| on the sample.

    Relative to each output's magnitude over the sample rather than pointwise: an output
    that crosses zero would otherwise turn float32 rounding into arbitrarily large ratios.
    """
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    if y.shape != ref.shape:
        raise ValueError(f"shape {y.shape} vs reference {ref.shape}")
    if not np.all(np.isfinite(y)):
        return float("inf")
    scale = np.maximum(np.max(np.abs(ref), axis=0), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(y - ref) / scale))


def c_identifier(name: str, where: str = "--name") -> str:
    """``name`` if it is a valid C/C++ identifier (not a keyword), else a ``ConfigError``."""
    if not _IDENT_RE.match(name) or name in C_KEYWORDS:
        raise ConfigError(f"{where}: expected a C identifier (letters, digits, '_', not starting with a digit, "
                          f"not a keyword), but got '{name}'")
    return name


def default_name(output: str | Path) -> str:
    """A C identifier from the output file's stem: ``cot-model.h`` -> ``cot_model``."""
    stem = Path(output).name.split(".")[0]
    ident = re.sub(r"[^A-Za-z0-9_]", "_", stem) or "surrogate"
    ident = ident if not ident[0].isdigit() else f"m_{ident}"
    return f"{ident}_" if ident in C_KEYWORDS or keyword.iskeyword(ident) else ident


def sidecar(info: ExportInfo, fmt: str, artefact: Path, artefact_sha256: str, interface: dict[str, Any],
            verification: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The ``<output>.json`` content: what the artefact computes and where it came from."""
    return {
        "format": fmt,
        "artefact": artefact.name,
        "artefact_sha256": artefact_sha256,
        "name": info.name,
        "computes": "outputs in original units from raw (unnormalized) inputs; normalization is inside",
        "in_lbl": info.in_lbl,
        "out_lbl": info.out_lbl,
        "input_bounds": info.bounds_dict(),
        "input_bounds_estimated": info.bounds_estimated,
        "interface": interface,
        "model": {"kind": info.kind, "layers": info.layers, "residual": info.residual, "activation": info.activation,
                  "source_target_convention": info.target_convention},
        "source": {"checkpoint": str(info.checkpoint), "sha256": info.checkpoint_sha256,
                   "original_pipeline": info.original_pipeline},
        "rollfit_version": info.rollfit_version,
        "torch_version": torch.__version__,
        "verification": verification,
    }
