"""``c`` export: one dependency-free C99 header, usable from C++.

The header holds the weights and normalization vectors as ``static const float`` arrays
and one function ``static inline void <name>_predict(const float *x, float *y)``: ``x``
holds one point's raw inputs in ``in_lbl`` order, ``y`` receives the outputs in original
units. An ensemble's header stores each weight array member after member and
``_predict`` averages the members (the model's mean); Gaussian-process kinds are rendered
by ``c_gp.render_gp`` (same interface). Only ``<math.h>`` is used (``erff`` for gelu, ``expf`` for silu, ``tanhf``); link
with ``-lm``. Everything is ``static``, so the header can be included in several
translation units. The self-check compiles a small program with the system C compiler
(``$CC``, else ``cc``) and compares its output with PyTorch.

Labels and file names from the checkpoint are data: they appear only as escaped string
literals or as whitelisted comment text, and the self-check compiles only a header that
passes the audit of ``c_safety`` (see there).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import MissingDependency, OutputError
from ..model.ensemble import EnsembleNet, StackedLinear
from ..model.network import Act, RegressionNet
from ..model.registry import ACTIVATIONS
from .c_safety import audit_header, c_comment, c_ident, c_string, check_definitions
from .common import ExportInfo, UnitsModel

EXTENSION = ".h"

# the C expression of each activation: ``registry.ACTIVATIONS[name].c``


# ----------------------------------------------------------------------------- rendering
def c_float(v: float) -> str:
    """A finite float32 value as a C literal that reads back to the same float."""
    if not np.isfinite(np.float32(v)):
        raise OutputError(f"c export: expected finite numbers in the header, but got {v}")
    return np.format_float_scientific(np.float32(v), unique=True, trim="0") + "f"


def _labels(kind: str, labels: list[str]) -> str:
    """The ``<kind>`` label strings as an initializer, each through the strict escaper."""
    return ", ".join(c_string(s, f"{kind} label {j + 1}") for j, s in enumerate(labels))


def _array(name: str, values: np.ndarray, per_line: int = 8) -> str:
    flat = [c_float(v) for v in np.asarray(values, np.float32).reshape(-1)]
    lines = [", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    return f"static const float {name}[{len(flat)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


def _act_name(mod: nn.Module) -> str:
    """The C activation of an activation module."""
    return mod.name


def _activations(net: nn.Module) -> set[str]:
    """The activation functions the network uses (sequential nets may add tanh)."""
    return {_act_name(m) for m in net.mlp.modules() if isinstance(m, Act)}


_LINEARS = (nn.Linear, StackedLinear)  # an ensemble's layers: one weight array per layer, member after member


def _linears(net: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(tag, Linear) of the MLP in state_dict order, tags used as array names."""
    return [(c_ident(n.replace(".", "_"), "a layer name"), m) for n, m in net.mlp.named_modules()
            if isinstance(m, _LINEARS)]


def _dense_call(p: str, tag: str, lin: nn.Linear, x: str, y: str) -> str:
    """One dense layer; an ensemble's (a StackedLinear) reads member ``m``'s slice of the arrays."""
    n_out, n_in = lin.out_features, lin.in_features
    w, b = f"{p}_{tag}_w", f"{p}_{tag}_b"
    if isinstance(lin, StackedLinear):
        w, b = f"{w} + m * {n_out * n_in}", f"{b} + m * {n_out}"
    return f"    {p}_dense({w}, {b}, {n_out}, {n_in}, {x}, {y});\n"


def _act_loop(p: str, act: str, buf: str, n: int) -> str:
    return f"    for (i = 0; i < {n}; ++i) {buf}[i] = {p}_{act}({buf}[i]);\n"


def _body_residual(p: str, net: nn.Module) -> str:
    """h = act(W_in x~); per hidden layer z = W h [act except last] + skip(h); y = W_out h."""
    mlp = net.mlp
    act = _act_name(mlp.activation)
    code = _dense_call(p, "input_layer", mlp.input_layer, "xn", "h") + _act_loop(p, act, "h", mlp.input_layer.out_features)
    last = len(mlp.layers) - 1
    for i, (layer, skip) in enumerate(zip(mlp.layers, mlp.skip_connections)):
        code += _dense_call(p, f"layers_{i}", layer, "h", "z")
        if i < last:
            code += _act_loop(p, act, "z", layer.out_features)
        if isinstance(skip, _LINEARS):
            code += _dense_call(p, f"skip_connections_{i}", skip, "h", "s")
            code += f"    for (i = 0; i < {layer.out_features}; ++i) h[i] = z[i] + s[i];\n"
        else:
            code += f"    for (i = 0; i < {layer.out_features}; ++i) h[i] = z[i] + h[i];\n"
    return code + _dense_call(p, "output_layer", mlp.output_layer, "h", "y")


def _body_sequential(p: str, net: nn.Module) -> str:
    """input, act0, hidden1, act1, ..., output; the last hidden activation is tanh when
    there are two or more hidden layers (the original's layout)."""
    mods = list(net.mlp.mlp.named_children())
    code, src, dst, width = "", "xn", "h", 0
    for name, mod in mods:
        if isinstance(mod, _LINEARS):
            out = "y" if name == "output" else dst
            code += _dense_call(p, f"mlp_{name}", mod, src, out)
            src, dst, width = out, ("z" if out == "h" else "h"), mod.out_features
        else:
            code += _act_loop(p, _act_name(mod), src, width)
    return code


def _network(model: nn.Module) -> nn.Module:
    """The trained model inside an export wrapper (``UnitsModel``), or the model itself."""
    return model.net if isinstance(model, UnitsModel) else model


def _members_loop(p: str, net: nn.Module, body: str) -> str:
    """``body`` (one network into y) once, or for an ensemble once per member, averaged into y."""
    if not isinstance(net, EnsembleNet):
        return body
    k, inner = net.members, body.replace("\n    ", "\n        ")
    return (f"    for (i = 0; i < {net.output_dim}; ++i) acc[i] = 0.0f;\n"
            f"    for (m = 0; m < {k}; ++m) {{\n    {inner}"
            f"        for (i = 0; i < {net.output_dim}; ++i) acc[i] += y[i];\n    }}\n"
            f"    for (i = 0; i < {net.output_dim}; ++i) y[i] = acc[i] / {c_float(k)};\n")


def render_header(units: nn.Module, info: ExportInfo) -> str:
    """The header's text for a network kind (``mlp``: one network, ``ensemble``: the average
    of its members); ``units`` is the model or its ``UnitsModel``."""
    net, p = _network(units), c_ident(info.name, "the name")
    ensemble = isinstance(net, EnsembleNet)
    widths = [m.out_features for _, m in _linears(net)] + [net.input_dim]
    acts_used = _activations(net)
    guard = f"ROLLFIT_{p.upper()}_H"
    out = [f"/* {p}.h: {c_comment(info.describe())}.\n"
           f" * Generated by rollfit {info.rollfit_version} from {c_comment(info.checkpoint.name)} "
           f"(sha256 {info.checkpoint_sha256}). Do not edit.\n"
           f" * Usage: float x[{p.upper()}_N_INPUTS] = {{...}}, y[{p.upper()}_N_OUTPUTS]; {p}_predict(x, y);\n"
           f" * C99 and C++; needs only <math.h> (link with -lm). */\n",
           f"#ifndef {guard}\n#define {guard}\n\n#include <math.h>\n\n"
           "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n",
           f"#define {p.upper()}_N_INPUTS {len(info.in_lbl)}\n#define {p.upper()}_N_OUTPUTS {len(info.out_lbl)}\n\n",
           f"static const char *const {p}_input_labels[{len(info.in_lbl)}] = "
           f"{{{_labels('input', info.in_lbl)}}};\n",
           f"static const char *const {p}_output_labels[{len(info.out_lbl)}] = "
           f"{{{_labels('output', info.out_lbl)}}};\n",
           f"/* {info.range_kind} of each input */\n",
           _array(f"{p}_input_low", info.lo), _array(f"{p}_input_high", info.hi),
           _array(f"{p}_input_mean", net.input_mean), _array(f"{p}_input_std", net.input_std)]
    if net.target_convention == "normalized":
        out += [_array(f"{p}_target_mean", net.target_mean), _array(f"{p}_target_std", net.target_std)]
    for tag, lin in _linears(net):
        layout = f"{net.members} members of " if ensemble else ""
        out += [f"/* {tag}: {lin.in_features} -> {lin.out_features}, {layout}row-major [out][in] */\n",
                _array(f"{p}_{tag}_w", lin.weight.detach()), _array(f"{p}_{tag}_b", lin.bias.detach())]
    out += [f"\nstatic inline float {p}_{a}(float z) {{ return {ACTIVATIONS[a].c}; }}\n" for a in sorted(acts_used)]
    out.append(f"\nstatic inline void {p}_dense(const float *w, const float *b, int n_out, int n_in, "
               f"const float *x, float *y) {{\n    int o, i;\n    for (o = 0; o < n_out; ++o) {{\n"
               f"        float s = b[o];\n        for (i = 0; i < n_in; ++i) s += w[o * n_in + i] * x[i];\n"
               f"        y[o] = s;\n    }}\n}}\n")
    body = _members_loop(p, net, _body_residual(p, net) if net.residual else _body_sequential(p, net))
    locals_ = (f"    float acc[{net.output_dim}];\n    int m;\n" if ensemble else "")
    finish = (f"    for (i = 0; i < {net.output_dim}; ++i) y[i] = y[i] * {p}_target_std[i] + {p}_target_mean[i];\n"
              if net.target_convention == "normalized" else "")
    out.append(f"\n/* x: {len(info.in_lbl)} raw inputs ({c_comment(', '.join(info.in_lbl))}); "
               f"y: {len(info.out_lbl)} outputs in original units ({c_comment(', '.join(info.out_lbl))}). */\n"
               f"static inline void {p}_predict(const float *x, float *y) {{\n"
               f"    float xn[{net.input_dim}], h[{max(widths)}], z[{max(widths)}], s[{max(widths)}];\n"
               f"{locals_}    int i;\n    (void)s; (void)z;\n"
               f"    for (i = 0; i < {net.input_dim}; ++i) xn[i] = (x[i] - {p}_input_mean[i]) / {p}_input_std[i];\n"
               f"{body}{finish}}}\n")
    out.append("\n#ifdef __cplusplus\n}\n#endif\n\n" f"#endif /* {guard} */\n")
    return "".join(out)


def render(units: nn.Module, info: ExportInfo) -> bytes:
    """The header file's bytes, audited (``c_safety.audit_header``) even when not verified.
    Network kinds are rendered here, other kinds (GPs) by ``c_gp.render_gp``."""
    net = _network(units)
    text = render_header(net, info) if isinstance(net, (RegressionNet, EnsembleNet)) else _other_kind(net, info)
    audit_header(text, info.name)
    return text.encode("ascii")


def _other_kind(model: nn.Module, info: ExportInfo) -> str:
    """The header of a kind that is not a network: the GP kinds' kernel sum (``c_gp``)."""
    from .c_gp import render_gp

    return render_gp(model, info)


NETWORK_KINDS = ("mlp", "ensemble")  # rendered here; the other kinds' headers come from c_gp


def _allowed_names(info: ExportInfo) -> tuple[set[str], re.Pattern]:
    """The functions and arrays the header of ``info.kind`` may define (the audit's whitelist)."""
    if info.kind in NETWORK_KINDS:
        return own_functions(info.name), own_arrays(info.name)
    from . import c_gp

    return c_gp.own_functions(info.name), c_gp.own_arrays(info.name)


def interface(info: ExportInfo) -> dict[str, Any]:
    """How to call the exported function (for the sidecar)."""
    return {"function": f"void {info.name}_predict(const float *x, float *y)",
            "x": f"float[{len(info.in_lbl)}]: raw inputs in in_lbl order",
            "y": f"float[{len(info.out_lbl)}]: outputs in original units in out_lbl order",
            "constants": [f"{info.name.upper()}_N_INPUTS", f"{info.name.upper()}_N_OUTPUTS",
                          f"{info.name}_input_labels", f"{info.name}_output_labels",
                          f"{info.name}_input_low", f"{info.name}_input_high"],
            "standard": "C99, usable from C++ (extern \"C\"); link with -lm"}


# ----------------------------------------------------------------------------- checking
def compiler() -> str:
    """The C compiler to check headers with: ``$CC``, else ``cc``; an error when neither exists."""
    cc = os.environ.get("CC") or "cc"
    found = shutil.which(cc)
    if not found:
        raise MissingDependency(f"c export: expected a C compiler ('{cc}') to verify the header, but it is not "
                                f"on PATH; install one, set CC, or pass --no-verify")
    return found


def driver_source(header: Path, info: ExportInfo) -> str:
    """A program that reads ``n`` then n x D floats from stdin and prints n x K outputs."""
    d, k = len(info.in_lbl), len(info.out_lbl)
    return (f'#include <stdio.h>\n#include "{header.name}"\n'
            "int main(void) {\n    long n, r; int j;\n"
            f"    float x[{d}], y[{k}];\n"
            '    if (scanf("%ld", &n) != 1) return 2;\n'
            "    for (r = 0; r < n; ++r) {\n"
            f'        for (j = 0; j < {d}; ++j) if (scanf("%f", &x[j]) != 1) return 3;\n'
            f"        {info.name}_predict(x, y);\n"
            f'        for (j = 0; j < {k}; ++j) printf("%.9e%c", (double)y[j], j + 1 < {k} ? \' \' : \'\\n\');\n'
            "    }\n    return 0;\n}\n")


def compile_driver(header: Path, info: ExportInfo, workdir: Path, cc: str | None = None,
                   flags: tuple[str, ...] = ("-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror")) -> Path:
    """Compile ``driver_source`` against ``header`` in ``workdir``; the executable's path."""
    main_c, exe = workdir / "rollfit_check_main.c", workdir / "rollfit_check"
    main_c.write_text(driver_source(header, info))
    cmd = [cc or compiler(), *flags, "-I", str(header.parent), "-o", str(exe), str(main_c), "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines() or ["(no message)"]
        first = next((ln for ln in lines if "error" in ln), lines[0]).replace(str(workdir) + os.sep, "")
        raise OutputError(f"c export: expected the generated header to compile, but {Path(cmd[0]).name} "
                          f"failed: {first}")
    return exe


def run_driver(exe: Path, x: np.ndarray) -> np.ndarray:
    """Feed ``x`` (N, D) to a compiled driver (run in its own folder); its (N, K) outputs."""
    text = f"{len(x)}\n" + "\n".join(" ".join(f"{v:.9e}" for v in row) for row in np.asarray(x, np.float32)) + "\n"
    res = subprocess.run([str(exe)], input=text, capture_output=True, text=True, cwd=exe.parent)
    if res.returncode != 0:
        raise OutputError(f"{exe.name}: expected the compiled check program to run, but it exited with "
                          f"{res.returncode}: {res.stderr.strip()[:200]}")
    return np.array([[float(v) for v in line.split()] for line in res.stdout.splitlines() if line.strip()])


def own_functions(p: str) -> set[str]:
    """The functions a header with prefix ``p`` may define."""
    return {f"{p}_dense", f"{p}_predict", *(f"{p}_{a}" for a in ACTIVATIONS)}


def own_arrays(p: str) -> re.Pattern:
    """The array names a header with prefix ``p`` may define."""
    return re.compile(rf"{p}_(?:input_labels|output_labels|input_(?:low|high|mean|std)|target_(?:mean|std)|"
                      rf"[A-Za-z0-9_]+_[wb])\Z")


def evaluate(path: Path, x: np.ndarray, info: ExportInfo) -> np.ndarray:
    """Outputs of the header at ``path`` for ``x``, compiled with the system C compiler.

    Nothing is compiled before the header passes ``audit_header`` and ``check_definitions``
    (only rollfit's own static definitions; no attributes, asm, pragmas or foreign
    includes, so no constructor runs). Compiled and run in a fresh private folder
    (``mkdtemp``, mode 0700) under a fixed file name, removed afterwards.
    """
    text = path.read_bytes().decode("latin-1")
    audit_header(text, info.name)
    cc = compiler()
    work = Path(tempfile.mkdtemp(prefix="rollfit-cc-"))
    try:
        header = work / "rollfit_header.h"
        header.write_text(text, encoding="latin-1")
        check_definitions(cc, header, *_allowed_names(info))
        return run_driver(compile_driver(header, info, work, cc), x)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_available() -> None:
    """A C compiler is needed only to verify; checked before any work."""
    compiler()
