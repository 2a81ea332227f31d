"""Plots: the pure plot-data functions, the figures' axes, and the PNG files of a run."""
from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from rollfit.analysis import plots
from rollfit.analysis.surrogate import Surrogate
from rollfit.cli.main import main
from rollfit.errors import ConfigError
from rollfit.model.network import RegressionNet

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _linear_surrogate() -> Surrogate:
    """A Surrogate over inputs a, b, c whose outputs are known exactly: u = a + 2b + 3c, v = a*b."""
    net = RegressionNet(3, 2, [4])
    cfg = {"in_lbl": ["a", "b", "c"], "out_lbl": ["u", "v"], "input_min": [0.0, 10.0, -1.0],
           "input_max": [1.0, 20.0, 1.0], "input_mean": [0.5, 15, 0], "input_std": [1, 1, 1]}
    s = Surrogate(net, cfg)
    s.predict = lambda X: np.stack([X[:, 0] + 2 * X[:, 1] + 3 * X[:, 2], X[:, 0] * X[:, 1]], axis=1)
    return s


def _png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ----------------------------------------------------------------------------- loss curves
def test_loss_curves_of_the_original_format_collect_separate_rows(fixtures_dir):
    rows = json.loads(next((fixtures_dir / "reference_run" / "logs").glob("regression_hdf5_*[0-9].json")).read_text())
    data = plots.loss_curve_data(rows)
    val_rows = [r for r in rows if "loss/val" in r]
    train_rows = [r for r in rows if "loss/train" in r]
    np.testing.assert_array_equal(data["losses"]["loss/val"]["step"], [r["step"] for r in val_rows])
    np.testing.assert_allclose(data["losses"]["loss/train"]["value"], [r["loss/train"] for r in train_rows])
    assert "lr" not in data["losses"] and len(data["lr"]["step"]) == len(train_rows)
    assert {"loss/reconstruction", "loss/l1", "loss/l2", "loss/grad_penalty"} <= set(data["losses"])


def test_loss_curves_drop_what_a_log_scale_cannot_show():
    rows = [{"step": s, "timestamp": "t", "loss/train": 1.0 / (s + 1), "loss/grad_penalty": 0.0, "lr": 0.1}
            for s in range(5)]
    data = plots.loss_curve_data(rows)
    assert "loss/grad_penalty" not in data["losses"] and data["dropped"] == {"loss/grad_penalty": 5}
    fig = plots.draw_loss_curves(data)
    ax, ax_lr = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss (log scale)"
    assert ax_lr.get_ylabel() == "learning rate" and ax_lr.get_yscale() == "log"
    assert [ln.get_label() for ln in ax.get_lines()] == ["loss/train"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])


# ----------------------------------------------------------------------------- parity / residuals
def test_parity_and_residual_data_and_axes():
    y = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    p = y + np.array([[0.5, -1.0], [0.0, 1.0], [-0.5, 0.0], [0.0, 2.0]])
    par = plots.parity_data(y, p, ["u", "v"], rows="4 rows")
    assert par["outputs"]["u"]["rmse"] == pytest.approx(np.sqrt(0.125))
    lo, hi = par["outputs"]["v"]["range"]
    assert lo < 10 and hi > 42
    fig = plots.draw_parity(par)
    labels = [(a.get_xlabel(), a.get_ylabel()) for a in fig.axes]
    assert labels == [("true u", "predicted u"), ("true v", "predicted v")]
    res = plots.residual_data(y, p, ["u", "v"], bins=3)
    np.testing.assert_allclose(res["outputs"]["v"]["residuals"], [-1, 1, 0, 2])
    assert res["outputs"]["u"]["counts"].sum() == 4 and len(res["outputs"]["u"]["edges"]) == 4
    fig = plots.draw_residuals(res)
    assert [a.get_xlabel() for a in fig.axes] == ["residual u (predicted - true)", "residual v (predicted - true)"]
    assert all(a.get_ylabel() == "rows" for a in fig.axes)


# ----------------------------------------------------------------------------- contour / slice
def test_contour_grid_is_the_prediction_at_each_point_with_others_held():
    s = _linear_surrogate()
    hold = plots.hold_values(s, None, {"c": 0.5})
    assert hold == {"a": 0.5, "b": 15.0, "c": 0.5}  # middle of the range without data, user's value for c
    pts = np.array([[0.2, 12.0, 0.0], [0.9, 18.0, 1.0]])
    data = plots.contour_data(s, ("b", "a"), hold, n=7, points=pts, failed=pts[:1])
    np.testing.assert_allclose(data["x"], np.linspace(10, 20, 7))
    np.testing.assert_allclose(data["y"], np.linspace(0, 1, 7))
    i, j = 2, 5  # z[i, j] is at (b = x[j], a = y[i])
    a, b = data["y"][i], data["x"][j]
    assert data["z"]["u"][i, j] == pytest.approx(a + 2 * b + 3 * 0.5, rel=1e-6)
    assert data["z"]["v"][i, j] == pytest.approx(a * b, rel=1e-6)
    np.testing.assert_allclose(data["points"], [[12.0, 0.2], [18.0, 0.9]])
    np.testing.assert_allclose(data["failed"], [[12.0, 0.2]])
    assert data["held"] == {"c": 0.5}
    fig = plots.draw_contour(data)
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes[:2]] == [("b", "a"), ("b", "a")]
    assert [cb.get_ylabel() for cb in fig.axes[2:]] == ["predicted u", "predicted v"]  # the colorbars
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["training rows", "failed runs"]


def test_hold_defaults_to_the_training_median_and_names_are_checked():
    s = _linear_surrogate()
    inputs = np.array([[0.0, 10.0, -1.0], [1.0, 11.0, 0.0], [0.2, 19.0, 1.0]])
    assert plots.hold_values(s, inputs) == {"a": 0.2, "b": 11.0, "c": 0.0}
    with pytest.raises(ConfigError, match=r"--hold: expected an input label \('c', 'a', 'b'\), but got 'cc'; "
                                          r"did you mean 'c'\?"):
        plots.hold_values(s, inputs, {"cc": 1.0})
    with pytest.raises(ConfigError, match="--pairs: expected two different inputs, but got 'a,a'"):
        plots.contour_data(s, ("a", "a"), plots.hold_values(s, inputs))
    from rollfit.cli.args import parse_assignments  # the CLI parses --hold and --pairs before torch is imported
    from rollfit.cli.plot import parse_pairs

    assert parse_assignments(["a=1.5", " c = -2"], "--hold") == {"a": 1.5, "c": -2.0}
    with pytest.raises(ConfigError, match="--hold: expected NAME=VALUE, but got 'a:1'"):
        parse_assignments(["a:1"], "--hold")

    with pytest.raises(ConfigError, match="--pairs 'a': expected two input names separated by a comma"):
        parse_pairs(["a"])


def test_slice_data_marks_rows_near_the_held_values():
    s = _linear_surrogate()
    hold = {"a": 0.5, "b": 15.0, "c": 0.0}
    inputs = np.array([[0.1, 15.5, 0.05], [0.9, 19.0, 0.0], [0.3, 14.5, -0.1]])
    targets = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    data = plots.slice_data(s, "a", hold, n=5, inputs=inputs, targets=targets, near=0.1)
    np.testing.assert_allclose(data["pred"]["u"], np.linspace(0, 1, 5) + 30.0, rtol=1e-6)
    np.testing.assert_array_equal(data["near"], [True, False, True])
    np.testing.assert_allclose(data["data_y"]["v"], [2, 4, 6])
    fig = plots.draw_slice(data)
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes] == [("a", "u"), ("a", "v")]


# ----------------------------------------------------------------------------- failed runs
def test_failed_inputs_are_read_from_failed_groups_with_a_param_state(tmp_path):
    from rollfit.data.synthetic import write_rollout_file

    x = np.ones((6, 13), np.float32)
    x[:, 0] = np.arange(6) / 10
    x[:, 1] = 1 + np.arange(6) / 10
    ok = np.array([True, False, True, False, True, True])
    h5 = write_rollout_file(tmp_path / "a.h5", x, {"metabolic/cot/MA/mean": np.arange(6.0)}, ok)
    got = plots.failed_inputs(h5, ["gait_cadence", "gait_stride"])
    np.testing.assert_allclose(got, [[1.1, 0.1], [1.3, 0.3]], rtol=1e-6)
    cstyle = write_rollout_file(tmp_path / "c.h5", x, {"metabolic/cot/MA/mean": np.arange(6.0)}, ok, style="cstyle")
    assert plots.failed_inputs(cstyle, ["gait_cadence"]).shape == (0, 1)  # failed groups without param_state


# ----------------------------------------------------------------------------- a run's PNGs
def test_make_plots_writes_valid_pngs(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    written = plots.make_plots(run, pairs=[("gait_stride", "gait_cadence")], slices=["gait_stride"],
                               hold={"gait_cadence": 1.0})
    assert set(written) == {"loss", "parity", "residuals", "contour_gait_stride_gait_cadence", "slice_gait_stride"}
    for path in written.values():
        assert path.parent == run / "plots" and min(_png_size(path)) > 100
    assert not [p for p in (run / "plots").iterdir() if p.name.startswith(".")]  # no temp files left


def test_plot_cli_and_its_errors(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["plot", "--run", str(run), "--hold", "gait_stride=1.1"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(run / "plots" / "contour_gait_cadence_gait_stride.png") in printed
    assert str(run / "plots" / "slice_gait_cadence.png") in printed
    assert main(["plot", "--run", str(run), "--pairs", "gait_stride,gait_cadense"]) == 2
    assert capsys.readouterr().err == ("rollfit plot: error: --pairs: expected an input label ('gait_cadence', "
                                       "'gait_stride'), but got 'gait_cadense'; did you mean 'gait_cadence'?\n")


def test_plots_of_an_original_pipeline_run(fixtures_dir, tmp_path):
    """The original's run folder (its log format, its relative data path) plots as well."""
    shutil.copytree(fixtures_dir / "reference_run", tmp_path / "reference_run")
    (tmp_path / "rollouts").mkdir()
    shutil.copy(fixtures_dir / "rollouts" / "u225.h5", tmp_path / "rollouts" / "u225.h5")
    written = plots.make_plots(tmp_path / "reference_run")
    assert {"loss", "parity", "residuals", "contour_gait_cadence_gait_stride"} <= set(written)
    for path in written.values():
        _png_size(path)


@pytest.mark.slow
def test_matplotlib_is_not_imported_by_the_cli_or_the_module():
    import subprocess
    import sys

    code = ("import sys, rollfit.analysis.plots, rollfit.analysis.report, rollfit.cli.main as m; m.build_parser(); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_scatter_plots_show_a_sample_but_metrics_use_every_row():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(300, 1))
    p = y + rng.normal(scale=0.1, size=(300, 1))
    data = plots.parity_data(y, p, ["u"], rows="300 rows", max_points=50)
    assert len(data["outputs"]["u"]["true"]) == 50 and data["rows"] == "300 rows (50 of 300 shown)"
    assert data["outputs"]["u"]["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    idx = plots.sample_rows(300, 50)
    assert len(set(idx.tolist())) == 50 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(plots.sample_rows(10, 50), np.arange(10))


def test_failed_run_search_is_capped_on_big_campaigns(tmp_path):
    from rollfit.data.synthetic import write_rollout_file

    ok = np.ones(40, bool)
    ok[::2] = False  # 20 failed runs
    h5 = write_rollout_file(tmp_path / "a.h5", None, {"metabolic/cot/MA/mean": np.zeros(40)}, ok)
    assert len(plots.failed_inputs(h5, ["gait_stride"])) == 20
    assert 0 < len(plots.failed_inputs(h5, ["gait_stride"], max_groups=10)) <= 10


def test_long_labels_give_file_names_the_file_system_takes(tmp_path):
    """Labels come from the data file: two 200-character parameter names made the contour's
    file name longer than 255 bytes, so `rollfit plot` and the run's report failed."""
    a, b = "a" * 200 + "_stride", "a" * 200 + "_cadence"
    name = f"contour_{plots.safe_name(a)}_{plots.safe_name(b)}.png"
    assert len(name.encode()) <= 255
    (tmp_path / name).write_bytes(b"")  # the file system takes it
    assert plots.safe_name(a) != plots.safe_name(b) and plots.safe_name(a) == plots.safe_name(a)
    assert plots.safe_name(a).startswith("a" * 40)
    assert plots.safe_name("gait_stride") == "gait_stride"
    assert plots.safe_name("cot/MA mean").startswith("cot-MA-mean-") and len(plots.safe_name("cot/MA mean")) == 20
    assert len({plots.safe_name(x) for x in ("a b", "a-b", "a/b", "a--b")}) == 4  # never one file for two labels
