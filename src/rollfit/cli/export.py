"""``rollfit export``: a trained run as ONNX, a torch.export program or a C header.

Each export writes the artefact and ``<output>.json`` (labels, input bounds, rollfit
version, source checkpoint hash), after checking the artefact against the PyTorch model on
random inputs within the input bounds (docs/interop.md).
"""
from __future__ import annotations

ORDER = 7

import argparse

from .main import add_debug


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run as ONNX, a torch.export program or a C header", description=(
        "Export a trained run (rollfit's or the original pipeline's) for use outside Python: onnx (onnxruntime), "
        "pt2 (torch.export; compile with AOTInductor for libtorch) or c (a C99 header). Raw inputs in, outputs "
        "in original units out. Writes OUTPUT and OUTPUT.json after checking the artefact against the model."))
    p.add_argument("--run", required=True, metavar="DIR", help="run folder (newest checkpoint) or a checkpoint file")
    p.add_argument("--format", required=True, dest="fmt", metavar="{onnx,pt2,c}",
                   help="onnx (ONNX model), pt2 (torch.export program) or c (C99 header)")
    p.add_argument("--output", required=True, metavar="PATH", help="file to write (e.g. model.onnx, model.pt2, cot.h)")
    p.add_argument("--name", help="C identifier: prefix of the header's names and ONNX graph name "
                                  "(default: from the output file name)")
    p.add_argument("--activation", help="activation of an original-pipeline run that does not record it")
    p.add_argument("--samples", type=int, default=256, metavar="N", help="random inputs for the check (default 256)")
    p.add_argument("--tolerance", type=float, default=1e-5, metavar="REL",
                   help="largest relative error the check accepts (default 1e-5)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the check (e.g. no C compiler here); the sidecar then records no verification")
    add_debug(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..export import export

    if args.samples < 1:
        raise ConfigError(f"--samples: expected a count >= 1, but got {args.samples}")
    result = export(args.run, args.fmt, args.output, name=args.name, activation=args.activation,
                    samples=args.samples, tolerance=args.tolerance, verify=not args.no_verify)
    print(result.describe())
    return 0
