"""``onnx`` export: one input tensor per input label, one output tensor per output label.

Each input is a float32 tensor of shape ``[batch]`` named by its label (raw units); each
output likewise, in original units; the batch size is dynamic. Named per label rather than
one packed ``[batch, D]`` tensor because ONNX is the one format here whose interface carries
names: onnxruntime then refuses a missing or misspelled input by name, and a column order
mix-up cannot happen silently. Labels, input bounds and provenance are also in the model's
``metadata_props`` and doc strings. Exported with the ``torch.export``-based exporter
(``dynamo=True``, which needs onnxscript); checked with onnxruntime.
"""
from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import OutputError, require_package
from .common import ExportInfo, UnitsModel

EXTENSION = ".onnx"
PIP = "onnx onnxruntime onnxscript"


class PerLabel(nn.Module):
    """The kind's export module with one (batch,) tensor per input and per output."""

    def __init__(self, units: nn.Module):
        super().__init__()
        self.units = units

    def forward(self, *columns: Tensor) -> tuple[Tensor, ...]:
        y = self.units(torch.stack(columns, dim=1))
        return tuple(y[:, k] for k in range(y.shape[1]))


def check_available() -> None:
    """onnx and onnxscript export, onnxruntime verifies: all three, with the pip hint."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require_package(module, PIP, "ONNX export")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's progress warnings (the self-check judges the result)."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def render(units: UnitsModel, info: ExportInfo) -> bytes:
    """The ONNX model's bytes, with labels, bounds and provenance in its metadata."""
    clash = sorted(set(info.in_lbl) & set(info.out_lbl))
    if clash:
        raise OutputError(f"onnx export: expected distinct input and output names, but '{clash[0]}' is both")
    module = PerLabel(units.export_module()).eval()
    example = tuple(torch.full((3,), float(m)) for m in (info.lo + info.hi) / 2)
    batch = torch.export.Dim("batch", min=1)
    ins = [f"rollfit_input_{j}" for j in range(len(info.in_lbl))]
    outs = [f"rollfit_output_{k}" for k in range(len(info.out_lbl))]
    with _quiet():
        program = torch.onnx.export(module, example, input_names=ins, output_names=outs,
                                    dynamic_shapes=(tuple({0: batch} for _ in ins),), dynamo=True, verbose=False)
    proto = program.model_proto
    _rename(proto.graph, dict(zip(ins + outs, info.in_lbl + info.out_lbl)))
    _describe(proto, info)
    return proto.SerializeToString()


def _rename(graph: Any, io_names: dict[str, str]) -> None:
    """Give the graph's inputs/outputs their label names.

    Exported under neutral names first, because a label such as ``linear`` may equal the
    name of an internal value; such internal values are renamed out of the way here.
    """
    used = {n for node in graph.node for n in (*node.input, *node.output)}
    used |= {v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}
    mapping = dict(io_names)
    for name in sorted(used & set(io_names.values())):
        fresh, i = f"{name}__internal", 1
        while fresh in used or fresh in mapping.values():
            fresh, i = f"{name}__internal{i}", i + 1
        mapping[name] = fresh
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = mapping.get(value.name, value.name)


def _describe(proto: Any, info: ExportInfo) -> None:
    """Doc strings on the model and on every input/output, and rollfit metadata."""
    proto.doc_string = info.describe()
    proto.graph.name = info.name
    bounds = info.bounds_dict()
    for value in proto.graph.input:
        lo, hi = bounds[value.name]
        value.doc_string = f"{value.name}: raw input, shape [batch], {info.range_kind} [{lo:.6g}, {hi:.6g}]"
    for value in proto.graph.output:
        value.doc_string = f"{value.name}: output in original units, shape [batch]"
    meta = {"rollfit_version": info.rollfit_version, "in_lbl": json.dumps(info.in_lbl),
            "out_lbl": json.dumps(info.out_lbl), "input_bounds": json.dumps(bounds),
            "source_checkpoint_sha256": info.checkpoint_sha256}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def evaluate(path: Path, x: np.ndarray, info: ExportInfo) -> np.ndarray:
    """Outputs of the ONNX file at ``path`` for ``x`` (N, D), computed by onnxruntime."""
    ort = require_package("onnxruntime", PIP, "ONNX export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.asarray(x, np.float32)
    outputs = session.run(info.out_lbl, {lbl: np.ascontiguousarray(x[:, j]) for j, lbl in enumerate(info.in_lbl)})
    return np.stack([np.asarray(o).reshape(-1) for o in outputs], axis=1)


def interface(info: ExportInfo) -> dict[str, Any]:
    """Input and output tensors (for the sidecar)."""
    return {"inputs": [{"name": k, "shape": ["batch"], "dtype": "float32", "units": "raw"} for k in info.in_lbl],
            "outputs": [{"name": k, "shape": ["batch"], "dtype": "float32", "units": "original"}
                        for k in info.out_lbl]}
