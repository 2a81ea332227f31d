"""``pt2`` export: a ``torch.export`` ExportedProgram saved with ``torch.export.save``.

The program takes one float32 tensor ``x`` of shape ``[batch, D]`` (raw inputs in
``in_lbl`` order; batch dynamic, >= 1) and returns ``[batch, K]`` in original units. Load it
with ``torch.export.load(path).module()``; the sidecar's content is also stored inside the
archive as ``extra_files["rollfit.json"]``. For C++ without Python, compile it with
AOTInductor (``torch._inductor.aoti_compile_and_package``) and run it with libtorch's
``AOTIModelPackageLoader`` (docs/guide.md, export).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import ExportInfo, UnitsModel

EXTENSION = ".pt2"
EXTRA_FILE = "rollfit.json"


def check_available() -> None:
    """torch.export is part of torch: nothing optional is needed."""


def render(units: UnitsModel, info: ExportInfo) -> bytes:
    """The saved ExportedProgram's bytes."""
    example = torch.as_tensor(np.stack([(info.lo + info.hi) / 2] * 3), dtype=torch.float32)
    program = torch.export.export(units.export_module().eval(), (example,),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    meta = {"in_lbl": info.in_lbl, "out_lbl": info.out_lbl, "input_bounds": info.bounds_dict(),
            "rollfit_version": info.rollfit_version, "source_checkpoint_sha256": info.checkpoint_sha256,
            "computes": info.describe()}
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={EXTRA_FILE: json.dumps(meta)})
    return buf.getvalue()


def evaluate(path: Path, x: np.ndarray, info: ExportInfo) -> np.ndarray:
    """Outputs of the program at ``path`` for ``x`` (N, D), loaded with ``torch.export.load``."""
    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        return module(torch.as_tensor(np.asarray(x, np.float32))).numpy()


def interface(info: ExportInfo) -> dict[str, Any]:
    """Input and output tensors (for the sidecar)."""
    return {"inputs": [{"name": "x", "shape": ["batch", len(info.in_lbl)], "dtype": "float32",
                        "columns": info.in_lbl, "units": "raw"}],
            "outputs": [{"shape": ["batch", len(info.out_lbl)], "dtype": "float32", "columns": info.out_lbl,
                         "units": "original"}],
            "load": "torch.export.load(path).module()"}
