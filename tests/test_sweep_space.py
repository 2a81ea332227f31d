"""Sweep spaces: parsing, checks against the config schema before any trial, results helpers.

None of these tests needs Ray: the space is checked, and a wrong space refused, before Ray
is imported or started.
"""
import csv
import io
import json
import math
import sys
from types import SimpleNamespace

import pytest

from rollfit.cli.main import main
from rollfit.config import Config, load_config
from rollfit.errors import ConfigError, MissingDependency
from rollfit.sweep import results
from rollfit.sweep.runner import SweepSettings, check_settings, run_sweep, trial_config
from rollfit.sweep.space import load_space, parse_space

GOOD = """
trainer.lr: {loguniform: [1.0e-4, 1.0e-1]}
trainer.grad_weight: {uniform: [0.0, 0.05]}
trainer.lr_patience: {randint: [20, 200]}
model.activation: {choice: [gelu, silu]}
model.layers: [[64, 32], [128, 64]]
trainer.recon_type: {grid: [huber, mse]}
"""


def _space(tmp_path, text, base=None):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return load_space(p, base), p


def test_good_space_parses_in_file_order(tmp_path):
    space, _ = _space(tmp_path, GOOD)
    assert space.keys == ["trainer.lr", "trainer.grad_weight", "trainer.lr_patience", "model.activation",
                          "model.layers", "trainer.recon_type"]
    kinds = {p.key: p.kind for p in space.params}
    assert kinds == {"trainer.lr": "loguniform", "trainer.grad_weight": "uniform", "trainer.lr_patience": "randint",
                     "model.activation": "choice", "model.layers": "grid", "trainer.recon_type": "grid"}
    assert space.has_grid and space.grid_size() == 4


def test_nested_sections_are_the_same_as_dotted_keys(tmp_path):
    nested, _ = _space(tmp_path, "trainer:\n  lr: {uniform: [0.001, 0.1]}\nmodel:\n  layers: [[8], [16]]\n")
    assert [(p.key, p.kind, p.values) for p in nested.params] == [
        ("trainer.lr", "uniform", (0.001, 0.1)), ("model.layers", "grid", ([8], [16]))]


def test_unknown_key_is_rejected_with_did_you_mean(tmp_path):
    with pytest.raises(ConfigError) as exc:
        _space(tmp_path, "trainer.lrr: {uniform: [0.001, 0.1]}\n")
    assert str(exc.value) == (f"{tmp_path / 'space.yaml'}: expected dotted config keys (section.key), "
                              f"but got unknown key 'trainer.lrr'; did you mean 'trainer.lr'?")


@pytest.mark.parametrize("text, message", [
    ("trainer.lr: {gaussian: [0.1, 0.2]}",
     "key 'trainer.lr': expected a distribution (choice, grid, uniform, loguniform, randint), but got 'gaussian'"),
    ("trainer.lr: {uniform: [0.1]}",
     "key 'trainer.lr': expected uniform: [low, high] with two finite numbers, but got [0.1]"),
    ("trainer.lr: {uniform: [0.2, 0.1]}", "key 'trainer.lr': expected uniform low < high, but got [0.2, 0.1]"),
    ("trainer.lr: {loguniform: [0.0, 0.1]}", "key 'trainer.lr': expected loguniform bounds > 0, but got [0.0, 0.1]"),
    ("trainer.lr_patience: {randint: [1.5, 9]}",
     "key 'trainer.lr_patience': expected randint: [low, high] with integers, but got [1.5, 9]"),
    ("model.layers: []", "key 'model.layers': expected a non-empty list of values for grid, but got []"),
    ("trainer.lr: 0.1", "key 'trainer.lr': expected a list of grid values or a mapping with one of "
                        "choice, grid, uniform, loguniform, randint, but got 0.1"),
])
def test_malformed_specs_are_rejected(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        _space(tmp_path, text + "\n")
    assert str(exc.value) == f"{tmp_path / 'space.yaml'}: {message}"


def test_values_are_validated_against_the_schema_before_any_trial(tmp_path):
    with pytest.raises(ConfigError) as exc:
        _space(tmp_path, "trainer.lr: {uniform: [-0.1, 0.1]}\n")
    assert str(exc.value).startswith(f"{tmp_path / 'space.yaml'}: trainer.lr: uniform[-0.1, 0.1]: key 'trainer.lr': ")
    assert "greater than 0" in str(exc.value) and str(exc.value).endswith("but got -0.1")
    with pytest.raises(ConfigError, match="model.activation"):
        _space(tmp_path, "model.activation: {choice: [gelu, swish]}\n")


def test_keys_that_change_the_rows_are_refused(tmp_path):
    with pytest.raises(ConfigError) as exc:
        _space(tmp_path, "data.in_lbl: [[a], [b]]\n")
    assert str(exc.value) == (f"{tmp_path / 'space.yaml'}: key 'data.in_lbl': expected a key that keeps the loaded "
                              f"rows (a sweep reads its data once for all trials), but got one that changes them; "
                              f"set it in --config")


def test_empty_and_missing_space_files(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping of dotted config keys to distributions, but got an emp"):
        _space(tmp_path, "")
    with pytest.raises(ConfigError, match="expected a search-space YAML file, but it does not exist"):
        load_space(tmp_path / "nope.yaml")


def test_decode_turns_ray_values_back_into_config_values(tmp_path):
    space, _ = _space(tmp_path, GOOD)
    np = pytest.importorskip("numpy")
    sampled = {"trainer.lr": np.float64(0.01), "trainer.grad_weight": 0.02, "trainer.lr_patience": np.int64(50),
               "model.activation": "silu", "model.layers": json.dumps([128, 64]), "trainer.recon_type": "mse"}
    values = space.decode(sampled)
    assert values["model.layers"] == [128, 64] and type(values["trainer.lr"]) is float
    assert type(values["trainer.lr_patience"]) is int
    cfg = trial_config(Config().to_dict(), values)
    assert cfg.model.layers == [128, 64] and cfg.trainer.lr == 0.01 and cfg.trainer.recon_type == "mse"
    assert cfg.trainer.progress is False and cfg.trainer.save_period == cfg.trainer.log_period


def test_settings_are_checked():
    with pytest.raises(ConfigError) as exc:
        check_settings(SweepSettings(metric="loss/vall"))
    assert str(exc.value) == ("--metric: expected one of loss/val, loss/train, loss/reconstruction, loss/l1, loss/l2, "
                              "loss/grad_penalty, but got 'loss/vall'; did you mean 'loss/val'?")
    with pytest.raises(ConfigError, match="--samples: expected an integer >= 1, but got 0"):
        check_settings(SweepSettings(samples=0))


def test_cli_rejects_an_unknown_key_before_any_trial(tmp_path, demo_file, capsys):
    (tmp_path / "space.yaml").write_text("model.layer: [[8], [16]]\n")
    out = tmp_path / "sweep"
    code = main(["sweep", "--space", str(tmp_path / "space.yaml"), "--hdf5", str(demo_file), "--output", str(out)])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"rollfit sweep: error: {tmp_path / 'space.yaml'}: expected dotted config keys (section.key), "
        f"but got unknown key 'model.layer'; did you mean 'model.layers'?")
    assert not out.exists()  # nothing started, nothing written
    if "ray" in sys.modules:
        assert not sys.modules["ray"].is_initialized()


def test_missing_ray_gives_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    space = parse_space({"trainer.lr": {"uniform": [0.001, 0.1]}})
    with pytest.raises(MissingDependency) as exc:
        run_sweep(Config(), space, tmp_path / "out", SweepSettings())
    assert str(exc.value) == ("package 'ray' is needed for sweeps, but it is not installed; "
                              "install it with: pip install \"rollfit[ray]\"")
    assert not (tmp_path / "out").exists()


# ---- results helpers, on stand-ins for Ray's results ------------------------------------------
def _fake_grid():
    def result(name, lr, layers, val, epoch, error=None):
        return SimpleNamespace(path=f"/x/ray/{name}", error=error, metrics={"loss/val": val, "epoch": epoch},
                               config={"trainer.lr": lr, "model.layers": json.dumps(layers)})
    return [result("trial_00000", 0.1, [8], 0.5, 20), result("trial_00001", 0.01, [16], 0.2, 40),
            result("trial_00002", 0.001, [16], 0.1, 10), result("trial_00003", 0.03, [8], math.nan, 5, error="boom"),
            result("trial_00004", 0.003, [16], 0.3, 40)]


def _fake_space():
    return parse_space({"trainer.lr": {"loguniform": [0.001, 0.1]}, "model.layers": {"choice": [[8], [16]]}})


def test_rows_rank_completed_first_then_stopped_then_failed():
    rows = results.collect_rows(_fake_grid(), _fake_space(), "loss/val", "min", max_epochs=40)
    assert [(r["rank"], r["trial"], r["status"]) for r in rows] == [
        (1, "trial_00001", "completed"), (2, "trial_00004", "completed"), (3, "trial_00002", "stopped early"),
        (4, "trial_00000", "stopped early"), (5, "trial_00003", "failed")]
    assert rows[0]["model.layers"] == [16] and rows[0]["trainer.lr"] == 0.01


def test_results_csv_reads_back_and_console_table_lines_up():
    space = _fake_space()
    rows = results.collect_rows(_fake_grid(), space, "loss/val", "min", max_epochs=40)
    cols = results.columns(rows, space, "loss/val")
    back = list(csv.DictReader(io.StringIO(results.results_csv(rows, cols))))
    assert [r["trial"] for r in back] == [r["trial"] for r in rows]
    assert float(back[0]["loss/val"]) == 0.2 and json.loads(back[0]["model.layers"]) == [16]
    table = results.console_table(rows, cols).splitlines()
    assert table[0].split() == ["rank", "trial", "loss/val", "status", "epochs", "trainer.lr", "model.layers"]
    assert len(table) == 2 + len(rows) and table[2].startswith("1     trial_00001")


def test_best_config_is_the_base_with_the_best_values():
    base = load_config(None, ["trainer.max_epochs=40"])
    space = _fake_space()
    rows = results.collect_rows(_fake_grid(), space, "loss/val", "min", max_epochs=40)
    best = results.best_config(base, rows, space)
    assert best.trainer.lr == 0.01 and best.model.layers == [16] and best.trainer.max_epochs == 40
    assert best.trainer.progress == base.trainer.progress  # sweep-only trial settings are not in it


def test_importance_ranks_the_key_that_explains_the_metric():
    space = parse_space({"trainer.lr": {"uniform": [0.0, 1.0]}, "model.activation": {"choice": ["gelu", "silu"]}})
    rows = [{"loss/val": 2.0 * lr + 0.001 * (act == "gelu"), "trainer.lr": lr, "model.activation": act}
            for lr, act in [(0.1, "gelu"), (0.5, "silu"), (0.2, "silu"), (0.9, "gelu"), (0.7, "silu")]]
    imp = results.importance(rows, space, "loss/val")
    assert list(imp) == ["trainer.lr", "model.activation"] and imp["trainer.lr"] == pytest.approx(1.0)
    assert 0.0 <= imp["model.activation"] < 0.5


def test_a_million_point_grid_is_refused_before_any_trial(tmp_path):
    """Issue 15: a 1e6-point sweep ran on with no cap."""
    text = "".join(f"trainer.{k}: {list(range(1, 11)) if k != 'lr' else [0.1 * i for i in range(1, 11)]}\n"
                   for k in ("lr", "max_epochs", "lr_patience", "log_period", "save_period", "recon_start_epoch"))
    with pytest.raises(ConfigError) as exc:
        _space(tmp_path, text)
    assert str(exc.value).endswith("space.yaml: expected at most 10000 trials, but got 1,000,000 "
                                   "(grid 10 x 10 x 10 x 10 x 10 x 10 = 1,000,000 points x 1 samples); sweep fewer values")


def test_samples_count_towards_the_trial_cap(tmp_path):
    from rollfit.sweep.space import check_trials

    space, _ = _space(tmp_path, "trainer.lr: {loguniform: [1.0e-4, 1.0e-1]}\n")
    assert check_trials(space, None) == 10 and check_trials(space, 10_000) == 10_000
    with pytest.raises(ConfigError, match=r"expected at most 10000 trials, but got 10,001 \(grid no grid"):
        check_trials(space, 10_001)


def test_space_yaml_gets_the_config_limits(tmp_path):
    with pytest.raises(ConfigError, match="line 2: expected each key once per mapping, but got 'trainer.lr' again"):
        _space(tmp_path, "trainer.lr: [0.1]\ntrainer.lr: [0.2]\n")
    p = tmp_path / "binary.yaml"
    p.write_bytes(b"trainer.lr: [\xff]\n")
    with pytest.raises(ConfigError, match=r"expected UTF-8 YAML text, but got a binary or non-UTF-8 file \(byte 13\)"):
        load_space(p)


def test_the_first_rung_fits_short_trials_and_a_longer_one_is_refused_before_ray():
    """trainer.max_epochs=5 with the default first rung (log_period 50) made Ray's ASHA fail:
    'internal error: AssertionError: grace_period must be <= max_t!' (exit 1)."""
    from rollfit.config import load_config
    from rollfit.sweep.runner import first_rung

    assert first_rung(load_config(None, ["trainer.max_epochs=5"]), SweepSettings()) == 5
    assert first_rung(load_config(None, ["trainer.max_epochs=3000"]), SweepSettings()) == 375
    assert first_rung(load_config(None, ["trainer.max_epochs=5"]), SweepSettings(grace_epochs=5)) == 5
    with pytest.raises(ConfigError) as exc:
        first_rung(load_config(None, ["trainer.max_epochs=5"]), SweepSettings(grace_epochs=6))
    assert str(exc.value) == "--grace-epochs: expected at most trainer.max_epochs (5), but got 6"


@pytest.mark.parametrize("flags", [["--grace-epochs", "9"], ["--metric", "loss/vall"]])
def test_refused_settings_leave_no_sweep_folder(tmp_path, demo_file, capsys, flags):
    (tmp_path / "space.yaml").write_text("trainer.lr: [0.1, 0.01]\n")
    out = tmp_path / "sweep"
    code = main(["sweep", "--space", str(tmp_path / "space.yaml"), "--hdf5", str(demo_file), "--output", str(out),
                 *flags, "trainer.max_epochs=5"])
    assert code == 2 and len(capsys.readouterr().err.splitlines()) == 1
    assert not out.exists()
