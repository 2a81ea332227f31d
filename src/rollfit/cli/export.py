"""``rollfit export``: a trained run as ONNX, a torch.export program or a C header.

Each export writes the artefact (``--file``) and ``<file>.json`` (labels, input bounds, rollfit
version, source checkpoint hash), after checking the artefact against the PyTorch model on
random inputs within the input bounds (docs/guide.md, Export).
"""
from __future__ import annotations

ORDER = 7

import argparse

from .args import COUNT, check_run, command, rename, number

FORMATS = ("onnx", "pt2", "c")


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "export", "run", "activation", help="export a run as ONNX, a torch.export program or a C header",
                description=(
        "Export a trained run (rollfit's or the original pipeline's) for use outside Python: onnx (onnxruntime), "
        "pt2 (torch.export; compile with AOTInductor for libtorch) or c (a C99 header). Raw inputs in, outputs "
        "in original units out. Writes FILE and FILE.json after checking the artefact against the model."))
    p.add_argument("--format", required=True, dest="fmt", choices=FORMATS,
                   help="onnx (ONNX model), pt2 (torch.export program) or c (C99 header)")
    p.add_argument("--file", required=True, metavar="FILE", help="file to write (e.g. model.onnx, model.pt2, cot.h)")
    rename(p, "--output", "--file")
    p.add_argument("--name", help="C identifier: prefix of the header's names and ONNX graph name "
                                  "(default: from the file name)")
    p.add_argument("--verify-samples", type=COUNT, default=256, metavar="N",
                   help="random inputs the check compares on (default: %(default)s)")
    rename(p, "--samples", "--verify-samples")
    p.add_argument("--tolerance", type=number(0.0, what="a relative error", open_lo=True), default=1e-5,
                   metavar="REL", help="largest relative error the check accepts (default: %(default)s)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the check (e.g. no C compiler here); the sidecar then records no verification")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_run(args.run)
    from ..export import export

    result = export(args.run, args.fmt, args.file, name=args.name, activation=args.activation,
                    samples=args.verify_samples, tolerance=args.tolerance, verify=not args.no_verify)
    print(result.describe())
    return 0
