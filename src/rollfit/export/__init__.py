"""Export a trained surrogate (rollfit's or the original pipeline's) for use outside Python.

``export(run, fmt, output)`` writes one artefact and a JSON sidecar ``<output>.json``:

- ``onnx``: an ONNX model, one ``[batch]`` tensor per input/output label (``export/onnx.py``);
- ``pt2``: a ``torch.export`` ExportedProgram (``export/pt2.py``), compilable with AOTInductor;
- ``c``: a dependency-free C99 header with ``<name>_predict(const float *x, float *y)``.

Every artefact computes outputs in original units from raw inputs: the mean of the model,
whatever its kind (one network; an ensemble's average; a GP's posterior mean). ONNX and pt2
trace the plain module the kind gives (``export_module()``); the C header is generated per
kind (networks in ``c_header``, GPs in ``c_gp``). A kind that cannot be exported to a format
is a one-line error naming the kinds that can. Before anything is
written, the artefact's bytes are written to a scratch folder, loaded back with the
format's own runtime (onnxruntime, ``torch.export.load``, the system C compiler) and
compared with the PyTorch model on random inputs within the input bounds; above the
tolerance it is an error and nothing is written. Then the artefact and the sidecar are
written atomically. See docs/guide.md (export).
"""
from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

from ..errors import CheckpointError, ConfigError, OutputError, did_you_mean

FORMATS = {"onnx": "onnx", "pt2": "pt2", "c": "c_header"}
DEFAULT_TOLERANCE = 1e-5


@dataclass
class ExportResult:
    """What ``export`` wrote and how well the artefact matched the model."""

    path: Path
    sidecar: Path
    format: str
    max_rel_error: Optional[float]
    samples: int

    def describe(self) -> str:
        """One line for the CLI."""
        check = (f"verified on {self.samples} random inputs within the input bounds: max relative error "
                 f"{self.max_rel_error:.3g}" if self.max_rel_error is not None else "not verified (--no-verify)")
        return f"wrote {self.path} ({self.format}) and {self.sidecar.name}; {check}"


def format_module(fmt: str) -> ModuleType:
    """The module implementing ``fmt``; a ``ConfigError`` for unknown formats."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, but got '{fmt}'"
                          f"{did_you_mean(str(fmt), FORMATS)}")
    return importlib.import_module(f"{__name__}.{FORMATS[fmt]}")


def export(run: str | Path, fmt: str, output: str | Path, *, name: Optional[str] = None,
           activation: Optional[str] = None, samples: int = 256, tolerance: float = DEFAULT_TOLERANCE,
           seed: int = 0, verify: bool = True) -> ExportResult:
    """Export ``run``'s model (its best.ckpt, else newest checkpoint; or a checkpoint file) as ``fmt`` to ``output``.

    ``name``: C identifier used as the header's prefix and the ONNX graph name (default: from
    the output file name). ``activation``: for original runs without ``config.yaml``.
    Raises ``OutputError`` when the artefact differs from the model by more than
    ``tolerance`` (relative, see ``common.relative_error``).
    """
    from ..analysis.surrogate import Surrogate
    from ..model.kinds import kind_of
    from .common import ExportInfo, UnitsModel, c_identifier, check_kind_exports, default_name

    module = format_module(fmt)
    if not tolerance > 0:
        raise ConfigError(f"--tolerance: expected a relative error > 0, but got {tolerance}")
    out = Path(output)
    if out.is_dir():
        raise OutputError(f"--output: expected a file path, but {out} is a folder")
    ident = c_identifier(name) if name is not None else default_name(out)
    if verify:
        module.check_available()
    s = Surrogate.load(run, activation=activation)
    check_kind_exports(kind_of(s.config), fmt)
    _check_finite(s)
    info = ExportInfo.from_surrogate(s, ident)
    units = UnitsModel(s.model).eval()
    data = module.render(units, info)
    verification = _verify(module, data, out.name, info, s, samples, tolerance, seed, fmt) if verify else None
    return _write(out, data, fmt, module, info, verification)


def _check_finite(surrogate) -> None:
    """A diverged checkpoint (NaN/inf weights) cannot be exported meaningfully. Checked on
    what is exported (the kind's ``export_module``): a GP's constraint buffers hold inf bounds."""
    import torch

    module = surrogate.model.export_module()
    tensors = [*module.named_parameters(), *module.named_buffers()]
    bad = [name for name, t in tensors if not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{surrogate.checkpoint}: expected finite weights to export, but {bad[0]} has "
                              f"NaN or infinite values")


def _verify(module: ModuleType, data: bytes, filename: str, info, surrogate, samples: int, tolerance: float,
            seed: int, fmt: str) -> dict:
    """Load ``data`` back from a scratch file with the format's runtime and compare with the model."""
    from .common import relative_error, sample_inputs

    x = sample_inputs(info.lo, info.hi, samples, seed)
    with tempfile.TemporaryDirectory(prefix="rollfit-export-") as tmp:
        path = Path(tmp) / filename
        path.write_bytes(data)
        got = module.evaluate(path, x, info)
    err = relative_error(got, surrogate.predict(x))
    if not err <= tolerance:
        raise OutputError(f"{fmt} export: expected the exported model to match the PyTorch model within "
                          f"{tolerance:g} relative, but got max relative error {err:.3g} on {len(x)} random "
                          f"inputs; nothing was written")
    return {"samples": len(x), "seed": seed, "max_rel_error": err, "tolerance": tolerance,
            "measure": "max over outputs of max |exported - pytorch| / max |pytorch| on the sample",
            "inputs": "uniform within input_bounds, corners included"}


def _write(out: Path, data: bytes, fmt: str, module: ModuleType, info, verification: Optional[dict]) -> ExportResult:
    """Write the artefact, check it landed intact, then the sidecar (both atomically)."""
    import hashlib

    from ..io import atomic_write_bytes, atomic_write_json
    from .common import sha256_file, sidecar

    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(out, data)
    if sha256_file(out) != digest:
        raise OutputError(f"{out}: expected the written file to equal the verified bytes, but it differs")
    side = out.with_name(out.name + ".json")
    atomic_write_json(side, sidecar(info, fmt, out, digest, module.interface(info), verification))
    return ExportResult(out, side, fmt, verification["max_rel_error"] if verification else None,
                        verification["samples"] if verification else 0)


__all__ = ["FORMATS", "ExportResult", "export", "format_module"]
