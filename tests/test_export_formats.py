"""Export round trips: each format, read back by its own runtime, matches PyTorch within 1e-5.

Sources: the original pipeline's residual run (shared fixture), original sequential and
residual runs built from REFERENCE.md's layout (odd labels included), and a rollfit run
(normalized convention). onnx tests skip cleanly without onnx/onnxruntime.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollfit.analysis.surrogate import Surrogate
from rollfit.cli.main import main
from rollfit.errors import ConfigError, MissingDependency, OutputError
from rollfit.export import c_header, export, format_module
from rollfit.export.c_safety import audit_header, c_comment, c_string, top_level_definitions
from rollfit.export.common import c_identifier, default_name, relative_error, sample_inputs

sys.path.insert(0, str(Path(__file__).parent))
from test_interop_original import write_original_run  # noqa: E402

ODD_IN = ("gait cadence", 'q"uote?', "a/b")
ODD_OUT = ("cot/MA*/mean", "linear")  # "linear" is also an internal value name in exported graphs

CC = shutil.which("cc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler 'cc' on PATH")


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """Original-format runs: sequential (tanh last) with odd labels, residual with an Identity skip."""
    root = tmp_path_factory.mktemp("originals")
    return {
        "seq_silu": write_original_run(root / "seq", residual=False, layers=[16, 12, 8], activation="silu",
                                       in_lbl=ODD_IN, out_lbl=ODD_OUT),
        "res_relu": write_original_run(root / "res", residual=True, layers=[12, 12, 6], activation="relu", seed=3),
        "res_tanh": write_original_run(root / "res1", residual=True, layers=[10], activation="tanh", seed=4),
        "seq_gelu": write_original_run(root / "seq1", residual=False, layers=[9], activation="gelu", seed=5),
    }


def _within_bounds(s: Surrogate, n: int = 300, seed: int = 7) -> np.ndarray:
    lo, hi = (np.array([s.bounds[k][i] for k in s.in_lbl]) for i in (0, 1))
    return sample_inputs(lo, hi, n, seed)


# ---- C header -------------------------------------------------------------------------------
MAIN_C = r"""
#include <stdio.h>
#include "{header}"
int main(void) {{
    float x[{P}_N_INPUTS], y[{P}_N_OUTPUTS];
    int j;
    while (1) {{
        for (j = 0; j < {P}_N_INPUTS; ++j) if (scanf("%f", &x[j]) != 1) return 0;
        {p}_predict(x, y);
        for (j = 0; j < {P}_N_OUTPUTS; ++j) printf("%.9g ", y[j]);
        printf("\n");
    }}
}}
"""


def compile_and_run(header: Path, name: str, x: np.ndarray, tmp: Path) -> np.ndarray:
    """Our own small main, compiled with cc, fed x on stdin."""
    src = tmp / "main.c"
    src.write_text(MAIN_C.format(header=header.name, p=name, P=name.upper()))
    exe = tmp / "main"
    subprocess.run([CC, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O2", "-I", str(header.parent),
                    str(src), "-o", str(exe), "-lm"], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], input="\n".join(" ".join(f"{v:.9g}" for v in r) for r in x) + "\n",
                         capture_output=True, text=True, check=True).stdout
    return np.array([[float(v) for v in line.split()] for line in out.splitlines()])


@needs_cc
@pytest.mark.parametrize("source", ["reference", "seq_silu", "res_relu", "res_tanh", "seq_gelu", "rollfit"])
def test_c_header_matches_pytorch(source, originals, fixtures_dir, trained_run, tmp_path):
    run = {"reference": fixtures_dir / "reference_run", "rollfit": trained_run}.get(source) or originals[source]
    result = export(run, "c", tmp_path / "surrogate.h", name="cot")
    s = Surrogate.load(run)
    x = _within_bounds(s)
    y = compile_and_run(result.path, "cot", x, tmp_path)
    assert relative_error(y, s.predict(x)) < 1e-5
    assert result.max_rel_error < 1e-5


@needs_cc
def test_c_header_labels_and_cxx_with_two_translation_units(originals, tmp_path):
    header = export(originals["seq_silu"], "c", tmp_path / "odd-model.h").path
    text = header.read_text()
    assert "void odd_model_predict(const float *x, float *y)" in text
    src = tmp_path / "labels.c"
    src.write_text('#include <stdio.h>\n#include "odd-model.h"\nint main(void) { int j;\n'
                   '  for (j = 0; j < ODD_MODEL_N_INPUTS; ++j) printf("%s\\n", odd_model_input_labels[j]);\n'
                   '  for (j = 0; j < ODD_MODEL_N_OUTPUTS; ++j) printf("%s\\n", odd_model_output_labels[j]);\n'
                   '  return 0; }\n')
    subprocess.run([CC, "-std=c99", "-Wall", "-Werror", "-I", str(tmp_path), str(src), "-o", str(tmp_path / "lb"),
                    "-lm"], check=True, capture_output=True)
    out = subprocess.run([str(tmp_path / "lb")], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [*ODD_IN, *ODD_OUT]
    cxx = shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    for i in (1, 2):  # the header in two translation units links (everything is static)
        (tmp_path / f"tu{i}.cpp").write_text(
            f'#include "odd-model.h"\nfloat f{i}(float a) {{ float x[3] = {{a, a, a}}, y[2];'
            f' odd_model_predict(x, y); return y[0]; }}\n' + ("" if i == 1 else
            "float f1(float);\n#include <cstdio>\nint main() { std::printf(\"%g\\n\", f1(0.5f) - f2(0.5f)); }\n"))
    subprocess.run([cxx, "-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I", str(tmp_path),
                    str(tmp_path / "tu1.cpp"), str(tmp_path / "tu2.cpp"), "-o", str(tmp_path / "cxx")],
                   check=True, capture_output=True)
    assert subprocess.run([str(tmp_path / "cxx")], capture_output=True, text=True).stdout.strip() == "0"


# ---- pt2 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["reference", "seq_silu", "rollfit"])
def test_pt2_round_trip(source, originals, fixtures_dir, trained_run, tmp_path):
    run = {"reference": fixtures_dir / "reference_run", "rollfit": trained_run}.get(source) or originals[source]
    result = export(run, "pt2", tmp_path / "model.pt2")
    s = Surrogate.load(run)
    extra = {"rollfit.json": ""}
    module = torch.export.load(str(result.path), extra_files=extra).module()
    for n in (1, 5, 1000):  # dynamic batch
        x = _within_bounds(s, n=n)
        with torch.no_grad():
            assert relative_error(module(torch.as_tensor(x)).numpy(), s.predict(x)) < 1e-5
    meta = json.loads(extra["rollfit.json"])
    assert meta["in_lbl"] == s.in_lbl and meta["out_lbl"] == s.out_lbl


# ---- onnx -------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["reference", "seq_silu", "rollfit"])
def test_onnx_round_trip(source, originals, fixtures_dir, trained_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run = {"reference": fixtures_dir / "reference_run", "rollfit": trained_run}.get(source) or originals[source]
    result = export(run, "onnx", tmp_path / "model.onnx")
    s = Surrogate.load(run)
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["in_lbl"]) == s.in_lbl and json.loads(meta["out_lbl"]) == s.out_lbl
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == s.in_lbl
    assert [o.name for o in sess.get_outputs()] == s.out_lbl
    for n in (1, 777):  # dynamic batch
        x = _within_bounds(s, n=n)
        got = sess.run(None, {k: x[:, j].copy() for j, k in enumerate(s.in_lbl)})
        assert relative_error(np.stack(got, axis=1), s.predict(x)) < 1e-5
    with pytest.raises(Exception, match="gait"):  # a missing input is refused by name
        sess.run(None, {s.in_lbl[0]: x[:, 0].copy()})


def test_onnx_missing_packages_give_the_pip_hint(monkeypatch, fixtures_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(MissingDependency) as exc:
        export(fixtures_dir / "reference_run", "onnx", tmp_path / "m.onnx")
    assert str(exc.value) == ("package 'onnxruntime' is needed for ONNX export, but it is not installed; "
                              "install it with: pip install onnx onnxruntime onnxscript")
    assert not (tmp_path / "m.onnx").exists()


# ---- sidecar, self-check, CLI -------------------------------------------------------------------
@pytest.mark.parametrize("fmt,suffix", [("c", ".h"), ("pt2", ".pt2")])
def test_sidecar_describes_artefact_and_source(fmt, suffix, fixtures_dir, tmp_path):
    if fmt == "c" and CC is None:
        pytest.skip("no C compiler")
    ckpt = fixtures_dir / "reference_run" / "checkpoints" / "ep_000200.ckpt"
    result = export(fixtures_dir / "reference_run", fmt, tmp_path / f"cot{suffix}")
    side = json.loads((tmp_path / f"cot{suffix}.json").read_text())
    s = Surrogate.load(ckpt)
    assert result.sidecar == tmp_path / f"cot{suffix}.json"
    assert side["format"] == fmt and side["in_lbl"] == s.in_lbl and side["out_lbl"] == s.out_lbl
    assert side["input_bounds"] == {k: list(v) for k, v in s.bounds.items()} and side["input_bounds_estimated"]
    assert side["rollfit_version"] == __import__("rollfit").__version__
    assert side["source"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert side["source"]["original_pipeline"] is True and side["model"]["source_target_convention"] == "raw"
    assert side["artefact_sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert side["verification"]["max_rel_error"] == result.max_rel_error <= 1e-5
    assert side["verification"]["samples"] == 256


def test_failed_check_writes_nothing_and_keeps_the_old_file(monkeypatch, fixtures_dir, tmp_path):
    out = tmp_path / "model.pt2"
    out.write_bytes(b"previous")
    module = format_module("pt2")
    real = module.evaluate
    monkeypatch.setattr(module, "evaluate", lambda path, x, info: real(path, x, info) * (1 + 1e-3))
    with pytest.raises(OutputError) as exc:
        export(fixtures_dir / "reference_run", "pt2", out)
    assert str(exc.value).startswith("pt2 export: expected the exported model to match the PyTorch model within "
                                     "1e-05 relative, but got max relative error 0.001")
    assert str(exc.value).endswith("on 256 random inputs; nothing was written")
    assert out.read_bytes() == b"previous" and not (tmp_path / "model.pt2.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]  # no temporary files left


def test_cli_export_and_errors(fixtures_dir, tmp_path, capsys):
    assert main(["export", "--run", str(fixtures_dir / "reference_run"), "--format", "pt2",
                 "--file", str(tmp_path / "m.pt2"), "--verify-samples", "50"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {tmp_path / 'm.pt2'} (pt2) and m.pt2.json; verified on 50 random inputs")
    assert main(["export", "--run", str(fixtures_dir / "reference_run"), "--format", "onxx",
                 "--file", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == ("rollfit export: error: --format: expected one of onnx, pt2, c, "
                                               "but got 'onxx'; did you mean 'onnx'?")
    assert main(["export", "--run", str(fixtures_dir / "reference_run"), "--format", "c", "--name", "int",
                 "--file", str(tmp_path / "m.h")]) == 2
    assert "--name: expected a C identifier" in capsys.readouterr().err


def test_cli_export_of_a_run_without_config_needs_activation(originals, tmp_path, capsys):
    run = tmp_path / "bare"
    shutil.copytree(originals["res_relu"], run)
    (run / "config.yaml").unlink()
    args = ["export", "--run", str(run), "--format", "pt2", "--file", str(tmp_path / "m.pt2")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "but the file is missing; pass --activation NAME (one of gelu, silu, relu, tanh)" in err
    with pytest.warns(UserWarning, match="placeholder labels"):
        assert main(args + ["--activation", "relu"]) == 0
    assert json.loads((tmp_path / "m.pt2.json").read_text())["in_lbl"] == ["x0", "x1", "x2"]


@needs_cc
def test_no_verify_records_no_check(fixtures_dir, tmp_path):
    result = export(fixtures_dir / "reference_run", "c", tmp_path / "m.h", verify=False)
    assert result.max_rel_error is None and "not verified" in result.describe()
    assert json.loads(result.sidecar.read_text())["verification"] is None


# ---- helpers -----------------------------------------------------------------------------------
def test_relative_error_is_per_output_scale():
    ref = np.array([[100.0, -1.0], [50.0, 1e-9]])
    assert relative_error(ref, ref) == 0.0
    assert relative_error(ref + [[1.0, 0.0], [0.0, 0.0]], ref) == pytest.approx(0.01)
    assert relative_error(ref + [[0.0, 0.0], [0.0, 0.5]], ref) == pytest.approx(0.5)
    assert relative_error(ref * np.nan, ref) == float("inf")


def test_names_and_samples():
    assert default_name("out/cot-model.v2.h") == "cot_model" and default_name("3d.h") == "m_3d"
    assert default_name("int.h") == "int_"
    assert c_identifier("cot_ma15") == "cot_ma15"
    with pytest.raises(ConfigError, match=r"but got 'a-b'"):
        c_identifier("a-b")
    x = sample_inputs(np.array([0.0, 1.0]), np.array([1.0, 3.0]), 100)
    assert x.shape == (100, 2) and x.dtype == np.float32
    assert (x >= [0, 1]).all() and (x <= [1, 3]).all() and list(x[0]) == [0, 1] and list(x[1]) == [1, 3]


def test_diverged_weights_and_bad_tolerance_are_refused(originals, tmp_path):
    run = tmp_path / "nan"
    shutil.copytree(originals["res_relu"], run)
    path = run / "checkpoints" / "ep_000007.ckpt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_state_dict"]["mlp.output_layer.bias"][0] = float("nan")
    torch.save(ckpt, path)
    with pytest.raises(Exception) as exc:
        export(run, "pt2", tmp_path / "m.pt2")
    assert str(exc.value) == (f"{path}: expected finite weights to export, but mlp.output_layer.bias has NaN "
                              "or infinite values")
    with pytest.raises(ConfigError, match=r"^--tolerance: expected a relative error > 0, but got 0"):
        export(originals["res_relu"], "pt2", tmp_path / "m.pt2", tolerance=0)
    assert not (tmp_path / "m.pt2").exists()


# ---- labels are data: the C header cannot be made to run code (issue 15, item 1) ----------------
INJECTION = 'a*\\\n/ int x = system("touch PWNED"); /*'
CONSTRUCTOR = ('b*\\\n/ extern int system(const char *); __attribute__((constructor)) static void pw(void) '
               '{ system("touch PWNED"); } /*')
FUZZ_EXAMPLES = int(os.environ.get("ROLLFIT_FUZZ_EXAMPLES", "6"))  # each compiles twice
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize="ROLLFIT_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LABEL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)

LABELS_C = r"""
#include <stdio.h>
#include "{header}"
int main(void) {{
    int j;
    for (j = 0; j < {P}_N_INPUTS; ++j) {{ fputs({p}_input_labels[j], stdout); putchar(0); }}
    for (j = 0; j < {P}_N_OUTPUTS; ++j) {{ fputs({p}_output_labels[j], stdout); putchar(0); }}
    return 0;
}}
"""


def labels_from_c(header: Path, name: str, tmp: Path) -> list[str]:
    """The label strings as a C program compiled against ``header`` prints them (trigraphs on)."""
    src, exe = tmp / "labels.c", tmp / "labels"
    src.write_text(LABELS_C.format(header=header.name, p=name, P=name.upper()))
    subprocess.run([CC, "-std=c99", "-trigraphs", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I", str(header.parent),
                    str(src), "-o", str(exe), "-lm"], check=True, capture_output=True, cwd=tmp)
    out = subprocess.run([str(exe)], capture_output=True, check=True, cwd=tmp).stdout
    return [b.decode("utf-8") for b in out.split(b"\0")[:-1]]


def units_and_info(in_lbl, out_lbl, *, residual=True, name="cot", activation="silu"):
    """A small random network and its export description with the given labels."""
    from rollfit.export.common import ExportInfo, UnitsModel
    from rollfit.model.network import RegressionNet

    torch.manual_seed(0)
    net = RegressionNet(len(in_lbl), len(out_lbl), [5, 4], residual=residual, activation=activation,
                        target_convention="normalized")
    info = ExportInfo(name=name, in_lbl=list(in_lbl), out_lbl=list(out_lbl), lo=np.zeros(len(in_lbl)),
                      hi=np.ones(len(in_lbl)), bounds_estimated=False, layers=[5, 4], residual=residual,
                      activation=activation, target_convention="normalized", checkpoint=Path("ep*\\\n/ 1.ckpt"),
                      checkpoint_sha256="0" * 64, original_pipeline=False)
    return UnitsModel(net).eval(), info


def expected_definitions(name: str, residual: bool, activation: str = "silu") -> set[str]:
    tags = (["input_layer", "layers_0", "skip_connections_0", "output_layer"] if residual else ["mlp_input", "mlp_hidden1", "mlp_output"])
    acts = {activation} | (set() if residual else {"tanh"})
    return {f"{name}_{x}" for x in ["input_labels", "output_labels", "input_low", "input_high", "input_mean",
                                     "input_std", "target_mean", "target_std", "dense", "predict",
                                     *(f"{t}_{wb}" for t in tags for wb in "wb"), *acts]}


def preprocessed_names(header: Path) -> set[str]:
    res = subprocess.run([CC, "-E", "-P", "-std=c99", str(header)], capture_output=True,
                         text=True, check=True)
    own = [n for _, _, n in top_level_definitions(res.stdout)]
    prefix = header.stem + "_"
    return {n for n in own if n.startswith(prefix)}


@needs_cc
@pytest.mark.parametrize("label", [INJECTION, CONSTRUCTOR])
def test_injected_label_stays_data_in_the_c_export(label, originals, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the self-check's scratch folders land here too
    run = write_original_run(tmp_path / "run", residual=True, layers=[6, 6], activation="relu",
                             in_lbl=(label, "b", "c"), out_lbl=("y*/", "??/"))
    result = export(run, "c", tmp_path / "out" / "cot.h", name="cot")
    assert result.max_rel_error < 1e-5
    assert not list(tmp_path.rglob("PWNED"))
    assert labels_from_c(result.path, "cot", tmp_path) == [label, "b", "c", "y*/", "??/"]
    assert not list(tmp_path.rglob("PWNED"))
    text = result.path.read_text()
    assert "system" not in _code_only(text) and "\\\n" not in text and "??" not in text
    assert json.loads(result.sidecar.read_text())["in_lbl"] == [label, "b", "c"]


def _code_only(text: str) -> str:
    """``text`` without its string literals and comments."""
    return re.sub(r'"(?:[^"\\\n]|\\.)*"|/\*.*?\*/', " ", text, flags=re.S)


@needs_cc
@FUZZ
@given(in_lbl=st.lists(LABEL, min_size=1, max_size=3), out_lbl=st.lists(LABEL, min_size=1, max_size=2),
       residual=st.booleans())
def test_any_labels_compile_round_trip_and_define_only_rollfits_names(in_lbl, out_lbl, residual, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    units, info = units_and_info(in_lbl, out_lbl, residual=residual)
    header = tmp / "cot.h"
    header.write_text(c_header.render_header(units, info))
    x = sample_inputs(info.lo, info.hi, 5)
    with torch.no_grad():
        assert relative_error(c_header.evaluate(header, x, info), units(torch.as_tensor(x)).numpy()) < 1e-5
    assert labels_from_c(header, "cot", tmp) == [*in_lbl, *out_lbl]
    assert preprocessed_names(header) == expected_definitions("cot", residual)


@given(text=st.text())
@settings(max_examples=300, deadline=None)
def test_comment_text_is_whitelisted(text):
    out = c_comment(text)
    assert out.isascii() and out.isprintable()
    assert not set(out) & set("*\\?\n") and "*/" not in out and "/*" not in out.replace("/<U+002A>", "")


def test_c_string_escapes_and_refusals():
    assert c_string('a"b\\c?\n\u00e9') == '"a\\042b\\134c\\077\\012\\303\\251"'
    with pytest.raises(OutputError) as exc:
        c_string("a\0b", "input label 2")
    assert str(exc.value) == ("c export: expected input label 2 without NUL characters and at most 1024 bytes long "
                              "(UTF-8), but got a NUL character: 'a\\x00b'")
    with pytest.raises(OutputError, match=r"at most 1024 bytes long \(UTF-8\), but got 1026 bytes"):
        c_string("\u00e9" * 513)
    with pytest.raises(OutputError, match=r"^c export: expected label to be valid Unicode text, but got"):
        c_string("\ud800")


def test_non_finite_bounds_are_refused_not_written_as_c():
    units, info = units_and_info(["a", "b"], ["y"])
    info.hi = np.array([1.0, np.inf])
    with pytest.raises(OutputError, match=r"^c export: expected finite numbers in the header, but got inf$"):
        c_header.render(units, info)


HOSTILE = [
    ("__attribute__((constructor)) static void cot_x(void) {}\n", "'__attribute__'"),
    ('static void cot_x(void) { __asm__("nop"); }\n', "'__asm__'"),
    ("#pragma GCC poison x\n", "the directive '#pragma GCC poison x'"),
    ('_Pragma("once")\n', "'_Pragma'"),
    ("#include <stdlib.h>\n", "the directive '#include <stdlib.h>'"),
    ("%:include <stdlib.h>\n", "a digraph directive ('%:')"),
    ("/* ??/\n*/\n", "a trigraph ('??')"),
    ("/* a *\\\n/ int y; /* */\n", "a line splice (backslash-newline)"),
    ("/* \u00e9 */\n", "a non-ASCII character"),
    ("#define system cot_x\n", "the directive '#define system cot_x'"),
]


@needs_cc
@pytest.mark.parametrize("extra,what", HOSTILE)
def test_header_audit_refuses_what_could_run_code(extra, what, tmp_path):
    units, info = units_and_info(["a", "b"], ["y"])
    text = c_header.render_header(units, info)
    audit_header(text, "cot")  # the generated header passes
    hostile = text.replace("#endif /* ROLLFIT_COT_H */", extra + "#endif /* ROLLFIT_COT_H */")
    (tmp_path / "cot.h").write_text(hostile)
    with pytest.raises(OutputError) as exc:
        c_header.evaluate(tmp_path / "cot.h", np.zeros((2, 2), np.float32), info)
    assert str(exc.value) == (f"c export: expected a header with only rollfit's own definitions, but it contains "
                              f"{what}; nothing was compiled")


@needs_cc
@pytest.mark.parametrize("extra,name", [("static int cot_evil(void) { return 0; }\n", "cot_evil"),
                                        ("int cot_input_low2[1] = {0};\n", "cot_input_low2"),
                                        ("static const float cot_input_low[1] = {0};\n", "cot_input_low")])
def test_header_defining_foreign_names_is_not_compiled(extra, name, tmp_path):
    units, info = units_and_info(["a", "b"], ["y"])
    text = c_header.render_header(units, info).replace("#endif /* ROLLFIT_COT_H */",
                                                       extra + "#endif /* ROLLFIT_COT_H */")
    (tmp_path / "cot.h").write_text(text)
    with pytest.raises(OutputError) as exc:
        c_header.evaluate(tmp_path / "cot.h", np.zeros((2, 2), np.float32), info)
    assert str(exc.value) == (f"c export: expected the header to define only rollfit's static arrays and functions, "
                              f"but it defines '{name}'; nothing was compiled")


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_injected_label_is_plain_data_in_pt2_and_onnx(fmt, tmp_path):
    if fmt == "onnx":
        for module in ("onnx", "onnxruntime", "onnxscript"):
            pytest.importorskip(module)
    run = write_original_run(tmp_path / "run", residual=True, layers=[6], activation="relu",
                             in_lbl=(INJECTION, "b", "c"), out_lbl=("y", CONSTRUCTOR))
    result = export(run, fmt, tmp_path / f"m.{fmt}")
    side = json.loads(result.sidecar.read_text())
    assert side["in_lbl"] == [INJECTION, "b", "c"] and side["out_lbl"] == ["y", CONSTRUCTOR]
    if fmt == "pt2":
        extra = {"rollfit.json": ""}
        torch.export.load(str(result.path), extra_files=extra)
        assert json.loads(extra["rollfit.json"])["in_lbl"] == [INJECTION, "b", "c"]
    else:
        import onnx

        proto = onnx.load(str(result.path))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["out_lbl"]) == ["y", CONSTRUCTOR]
        assert [i.name for i in proto.graph.input] == [INJECTION, "b", "c"]
    assert not list(tmp_path.rglob("PWNED"))
