"""Fuzzing the inputs a user or an attacker controls: only RollfitErrors may come out.

Targets: the constraint/target expression parser, the CSV reader ``predict`` uses, the
config loader (YAML bytes and overrides) and checkpoint loading (crafted dicts saved with
torch and read back through the project's loader). A few seconds by default (a fixed,
derandomized set); ``ROLLFIT_FUZZ_EXAMPLES=5000`` runs a longer random search.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollfit.analysis.constraints import parse_constraint, parse_expression
from rollfit.ckpt_schema import validate_checkpoint
from rollfit.config import load_config, parse_yaml
from rollfit.errors import CheckpointError, ConfigError, RollfitError

try:  # the checkpoint module's home moved (runs/ since issue 15's run-folder work)
    from rollfit.runs import checkpoint as ckpt_io
except ImportError:  # pragma: no cover
    from rollfit.training import checkpoint as ckpt_io

EXAMPLES = int(os.environ.get("ROLLFIT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="ROLLFIT_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NAMES = ["a", "b", "metabolic/cot/MA/mean"]


# ----------------------------------------------------------------------------- expressions
ATOMS = st.sampled_from(["a", "b", "`metabolic/cot/MA/mean`", "0", "1", "2.5", "1e308", "-8", ".5", "3E-2", "x"])
OPS = st.sampled_from(["+", "-", "*", "/", "^", "**", "(", ")", "=", "<=", ">=", "<", ">", "==", " "])
EXPRESSIONS = st.one_of(
    st.lists(st.one_of(ATOMS, OPS), max_size=40).map("".join),
    st.text(max_size=60),
    st.builds(lambda d, k: "(" * d + "a" + ")" * k, st.integers(0, 400), st.integers(0, 400)),
    st.builds(lambda n, op: op.join(["a"] * n), st.integers(1, 1200), st.sampled_from(["+", "*", "^", "-"])),
)


@FUZZ
@given(EXPRESSIONS, st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e6, 1e6))
def test_expressions_parse_or_raise_config_errors_and_evaluate_without_exceptions(text, x, y):
    env = {"a": x, "b": y, "metabolic/cot/MA/mean": 1.0}
    for parse in (lambda t: parse_expression(t, NAMES), lambda t: parse_constraint(t, NAMES)):
        try:
            parsed = parse(text)
        except ConfigError:
            continue
        value = parsed.residual(env) if hasattr(parsed, "residual") else parsed(env)
        assert isinstance(value, float) or (isinstance(value, torch.Tensor) and value.numel() == 1)
        tensor_env = {k: torch.tensor([v], dtype=torch.float64) for k, v in env.items()}
        out = parsed.residual(tensor_env) if hasattr(parsed, "residual") else parsed(tensor_env)
        assert torch.as_tensor(out).numel() == 1


# ----------------------------------------------------------------------------- CSV (predict)
CSV_BYTES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(st.lists(st.sampled_from(["a", "b", "1", "2.5", "nan", "inf", "-1e400", '"x,y"', "", " ", "é", '"']),
                      max_size=4), max_size=6)
    .map(lambda rows: "\n".join(",".join(r) for r in [["a", "b"], *rows]).encode()),
    st.sampled_from(["a,b\n1,2\n".encode("latin-1"), "a,b\né,1\n".encode("latin-1"), b"a,b\n" + b"9" * 140_000 + b",1\n",
                     b"\xef\xbb\xbfa,b\n1,2\n", b"a,a\n1,2\n", b"\n\n", b"a,b\n1\n"]),
)


@FUZZ
@given(data=CSV_BYTES)
def test_predict_csv_reader_only_raises_rollfit_errors(tmp_path, data):
    from rollfit.cli.predict import numeric_columns, read_csv

    p = tmp_path / "in.csv"
    p.write_bytes(data)
    try:
        header, rows = read_csv(p)
        x = numeric_columns(p, header, rows, ["a", "b"])
    except RollfitError as exc:
        assert "\n" not in str(exc) and "Traceback" not in str(exc)
        return
    assert x.shape == (len(rows), 2) and all(math.isfinite(v) for v in x.ravel())


# ----------------------------------------------------------------------------- config
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**80, 2**80), st.floats(), st.text(max_size=8))
KEYS = st.sampled_from(["data", "model", "trainer", "in_lbl", "layers", "max_epochs", "lr", "seed", "split_seed",
                        "batch_size", "progress", "activation", "<<", "x"])
YAMLISH = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(KEYS, inner, max_size=4)), max_leaves=20)


def _yaml_text(value) -> str:
    import json

    return json.dumps(value, allow_nan=True)  # JSON is YAML; NaN/Infinity become YAML strings or floats


@FUZZ
@given(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    YAMLISH.map(_yaml_text),
    st.builds(lambda d: "a: " + "[" * d + "]" * d, st.integers(0, 200)),
    st.builds(lambda n: "".join(f"k{i}: &k{i} [{', '.join([f'*k{i - 1}'] * 9) if i else 'x'}]\n" for i in range(n)),
              st.integers(1, 12)),
    st.sampled_from(["trainer:\n  lr: 1\n  lr: 2\n", "model: {layers: [100000, 100000]}", "trainer: {seed: -1}",
                     "trainer: {max_epochs: true}", "data: {split_seed: 1180591620717411303424}", "&a [*a]",
                     "!!python/object/apply:os.system ['echo hi']", "a: !!binary AAAA", "? [a, b]\n: c"]),
))
def test_config_loader_only_raises_config_errors(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        cfg = load_config(p)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert cfg.to_dict()["trainer"]["max_epochs"] >= 1


@FUZZ
@given(st.sampled_from(["trainer.max_epochs", "trainer.seed", "data.split_seed", "model.layers", "trainer.lr",
                        "trainer.progress", "data.in_lbl", "nope.x", "trainer"]),
       st.one_of(st.text(max_size=30), YAMLISH.map(_yaml_text)))
def test_overrides_only_raise_config_errors(key, value):
    try:
        load_config(None, [f"{key}={value}"])
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_parse_yaml_never_constructs_python_objects():
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        parse_yaml("!!python/object/apply:os.system ['echo hacked']", "x")


# ----------------------------------------------------------------------------- checkpoints
def _valid_checkpoint() -> dict:
    """A small, complete rollfit checkpoint (resumable), built from plain types and tensors."""
    from rollfit.model.network import RegressionNet

    net = RegressionNet(2, 1, [4], residual=True, activation="gelu")
    gen = torch.Generator().manual_seed(0)
    return {
        "epoch": 3, "model_state_dict": net.state_dict(), "optimizer_state_dict": {"state": {}, "param_groups": []},
        "scheduler_state_dict": {}, "trainer_state": {"shuffle_rng": gen.get_state(), "global_rng": {},
                                                       "rollbacks": 0, "log_file": "metrics.csv"},
        "config": {**net.constructor_args(), "format_version": 1, "in_lbl": ["a", "b"], "out_lbl": ["y"],
                   "aliases": {}, "input_min": [0.0, 0.0], "input_max": [1.0, 1.0]},
    }


@pytest.mark.parametrize("where, key, value, message", [
    ("config", "format_version", "1", "config.format_version: expected an integer >= 1, but got str '1'"),
    ("", "config", [1, 2], "config: expected a dict, but got list [1, 2]"),
    ("config", "layers", "64,32", "config.layers: expected a non-empty list of integer widths from 1 to 16777216, "
                                  "but got str '64,32'"),
    ("", "epoch", "x", "epoch: expected an integer >= 0, but got str 'x'"),
    ("trainer_state", "shuffle_rng", None, "trainer_state.shuffle_rng: expected the shuffling generator's state "
                                           "(a tensor), but it is missing"),
    ("config", "input_mean", [0.0], "config.input_mean: expected 2 finite numbers, but got list [0.0]"),
    ("config", "layers", [2**40], "config.layers: expected a non-empty list of integer widths from 1 to 16777216, "
                                  "but got list [1099511627776]"),
    ("", "model_state_dict", {"w": "x"}, "model_state_dict: expected a dict of named tensors, but got dict {'w': 'x'}"),
    ("trainer_state", "net_state_dict", 7, "trainer_state.net_state_dict: expected a dict of weight tensors, "
                                           "but got int 7"),
    ("trainer_state", "net_convention", "both", "trainer_state.net_convention: expected 'normalized' or 'raw', "
                                                "but got str 'both'"),
])
def test_issue15_malformed_checkpoints_are_one_line_errors(tmp_path, where, key, value, message):
    ckpt = _valid_checkpoint()
    target = ckpt[where] if where else ckpt
    if value is None:
        del target[key]
    else:
        target[key] = value
    path = tmp_path / "ep_000003.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as exc:
        ckpt_io.load_checkpoint(path)
    assert str(exc.value) == f"{path}: {message}"
    with pytest.raises(CheckpointError):
        ckpt_io.find_resume_checkpoint(path)


def test_a_valid_checkpoint_passes_and_resume_needs_the_training_state(tmp_path):
    ckpt = _valid_checkpoint()
    assert validate_checkpoint(ckpt, "x", resume=True) is ckpt
    del ckpt["trainer_state"]
    validate_checkpoint(ckpt, "x")
    with pytest.raises(CheckpointError, match="^x: trainer_state: expected a dict, but it is missing$"):
        validate_checkpoint(ckpt, "x", resume=True)


def test_the_reference_run_checkpoint_passes():
    root = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference_run" / "checkpoints"
    found = sorted(root.glob("*.ckpt"))
    if not found:
        pytest.skip("the shared reference run is not here")
    validate_checkpoint(torch.load(found[0], weights_only=True), found[0])


JUNK = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=3), SCALARS, max_size=2),
                 st.builds(torch.zeros, st.integers(0, 3)), st.just(float("nan")))
PLACES = st.sampled_from([("", k) for k in ("epoch", "config", "model_state_dict", "optimizer_state_dict",
                                            "trainer_state", "scheduler_state_dict")]
                         + [("config", k) for k in ("input_dim", "output_dim", "layers", "residual", "input_mean",
                                                    "input_std", "target_mean", "target_std", "format_version",
                                                    "in_lbl", "out_lbl", "activation", "target_convention",
                                                    "input_min", "aliases")]
                         + [("trainer_state", k) for k in ("shuffle_rng", "global_rng", "rollbacks", "log_file")])


@FUZZ
@given(st.lists(st.tuples(PLACES, st.one_of(st.just("<delete>"), JUNK)), min_size=1, max_size=3))
def test_crafted_checkpoints_only_raise_rollfit_errors(tmp_path, edits):
    ckpt = _valid_checkpoint()
    for (where, key), value in edits:
        target = ckpt.get(where) if where else ckpt
        if not isinstance(target, dict):
            continue
        if value == "<delete>":
            target.pop(key, None)
        else:
            target[key] = value
    path = tmp_path / "ep_000003.ckpt"
    torch.save(ckpt, path)
    for use in (ckpt_io.load_checkpoint, ckpt_io.find_resume_checkpoint, ckpt_io.load_model):
        try:
            use(path)
        except RollfitError as exc:
            assert "Traceback" not in str(exc)
