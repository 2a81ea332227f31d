"""``optimize`` on a model trained on the demo file, whose truth ``true_cot`` is known.

How close the answer can be is set by the fit, not by the optimizer. If the model is
``m = f + e`` and x^ minimizes m over the feasible set while x* minimizes f, then
``m(x^) <= m(x*)`` gives ``f(x^) - f(x*) <= e(x*) - e(x^) <= osc_R(e)``, the oscillation of
the model's error over any region R holding both points. So each test measures the error
of this very model around the true optimum (R: feasible points within RADIUS of it),
checks that the answer lies in R, and that its true cost exceeds the true optimum by at
most that oscillation (plus a small slack for the finite grid). A second assertion checks
the optimizer alone: no feasible grid point is better on the model than the answer.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from rollfit.analysis import optimize as opt
from rollfit.analysis.surrogate import Surrogate
from rollfit.cli.main import main
from rollfit.data.synthetic import DEMO_MIN_COT, DEMO_OPT_CADENCE, DEMO_OPT_STRIDE, true_cot

RADIUS = 0.05  # small R: a small oscillation, so a tight bound (R must still hold the answer)
SLACK = 0.02  # grid granularity of the oscillation and float32 predictions


@pytest.fixture(scope="module")
def sur(trained_run) -> Surrogate:
    return Surrogate.load(trained_run)


@pytest.fixture(scope="module")
def train_x(sur):
    x, note = opt.load_training_inputs(sur)
    assert x is not None, note
    return x


def truth(x: np.ndarray) -> np.ndarray:
    """true_cot of (N, 2) inputs in the model's order (cadence, stride)."""
    return true_cot(x[:, 1], x[:, 0])


def box(sur, n: int = 241) -> np.ndarray:
    (c0, c1), (s0, s1) = sur.bounds["gait_cadence"], sur.bounds["gait_stride"]
    return np.stack(np.meshgrid(np.linspace(c0, c1, n), np.linspace(s0, s1, n)), -1).reshape(-1, 2)


def check(sur, res, feasible_pts: np.ndarray) -> None:
    """The answer is as good as this model's fit allows, and the best the model offers."""
    x_hat = np.array([res.inputs["gait_cadence"], res.inputs["gait_stride"]])
    f = truth(feasible_pts)
    x_star, f_star = feasible_pts[np.argmin(f)], f.min()
    region = feasible_pts[np.linalg.norm(feasible_pts - x_star, axis=1) <= RADIUS]
    err = sur.predict(region)[:, 0] - truth(region)
    osc = err.max() - err.min()
    assert res.feasible
    assert np.linalg.norm(x_hat - x_star) <= RADIUS
    assert truth(x_hat[None])[0] - f_star <= osc + SLACK, (x_hat, x_star, osc)
    assert res.objective <= sur.predict(feasible_pts)[:, 0].min() + 1e-3


def test_unconstrained_optimum(sur, train_x):
    res = opt.optimize(sur, "cot_ma15", training_inputs=train_x)
    check(sur, res, box(sur))
    # The bowl's smallest curvature (eigenvalue of the Hessian [[150, 40], [40, 190]]) turns
    # the cost bound into a distance bound: |x^ - x*|^2 <= 2 (f(x^) - f*) / lambda_min.
    x_hat = np.array([res.inputs["gait_cadence"], res.inputs["gait_stride"]])
    gap = truth(x_hat[None])[0] - DEMO_MIN_COT
    assert np.linalg.norm(x_hat - [DEMO_OPT_CADENCE, DEMO_OPT_STRIDE]) <= np.sqrt(2 * gap / 125.3) + 1e-9


def test_fixed_cadence(sur, train_x):
    res = opt.optimize(sur, "cot_ma15", fix={"gait_cadence": 1.0}, training_inputs=train_x)
    s = np.linspace(*sur.bounds["gait_stride"], 4001)
    check(sur, res, np.stack([np.full_like(s, 1.0), s], 1))


def test_product_equality(sur, train_x):
    res = opt.optimize(sur, "cot_ma15", constraints=["gait_stride*gait_cadence=1.0"], training_inputs=train_x)
    s = np.linspace(*sur.bounds["gait_stride"], 4001)
    curve = np.stack([1.0 / s, s], 1)
    lo, hi = sur.bounds["gait_cadence"]
    check(sur, res, curve[(curve[:, 0] >= lo) & (curve[:, 0] <= hi)])
    assert abs(res.constraints["gait_stride*gait_cadence=1.0"]) < 1e-9


def test_ratio_inequality(sur, train_x):
    """stride/cadence <= 1 excludes the true optimum (ratio 1.105): the answer is on the boundary."""
    res = opt.optimize(sur, "cot_ma15", constraints=["gait_stride/gait_cadence<=1.0"], training_inputs=train_x)
    g = box(sur)
    c = np.linspace(*sur.bounds["gait_cadence"], 4001)
    edge = np.stack([c, c], 1)
    pts = np.concatenate([g[g[:, 1] <= g[:, 0]], edge[edge[:, 1] >= sur.bounds["gait_stride"][0]]])
    check(sur, res, pts)
    assert res.constraints["gait_stride/gait_cadence<=1.0"] <= 1e-9


def test_distance_uses_the_training_rows_from_the_run_config(sur, train_x):
    res = opt.optimize(sur, "cot_ma15", steps=200, starts=8)
    n = len(train_x)
    data_path = sur.config["run_config"]["data"]["hdf5_path"]
    assert res.distance_note.endswith(f"training rows ({n}) re-read from {data_path}")
    lo, hi = sur._bounds_arrays()
    assert np.allclose(train_x.min(0), lo) and np.allclose(train_x.max(0), hi)  # the training split, not all rows
    d = np.sqrt((((train_x - [res.inputs[k] for k in sur.in_lbl]) / sur.model.input_std.numpy()) ** 2).sum(1))
    assert res.distance_to_nearest_training_point == pytest.approx(d.min())


# ----------------------------------------------------------------------------- CLI
def test_cli_json(trained_run, capsys):
    code = main(["optimize", "--run", str(trained_run), "--target", "cot_ma15",
                 "--constraint", "gait_stride*gait_cadence=1.1", "--fix", "gait_cadence=1.0", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    keys = {"inputs", "outputs", "constraints", "feasible", "objective", "distance_to_nearest_training_point"}
    assert keys <= set(out)
    assert out["inputs"] == {"gait_cadence": 1.0, "gait_stride": pytest.approx(1.1, abs=1e-9)}
    assert out["constraints"]["gait_stride*gait_cadence=1.1"] == pytest.approx(0.0, abs=1e-9)
    assert out["feasible"] is True and out["outputs"]["cot_ma15"] == out["objective"]
    assert out["distance_to_nearest_training_point"] > 0


def test_cli_table_infeasible_exit_code(trained_run, capsys):
    code = main(["optimize", "--run", str(trained_run), "--target", "cot_ma15", "--maximize", "--steps", "160",
                 "--starts", "4", "--bounds", "gait_stride=0.8:0.9", "--constraint", "gait_stride>=1.0"])
    captured = capsys.readouterr()
    assert code == 1
    assert "maximize cot_ma15: infeasible: no start satisfies the constraints" in captured.out
    assert "feasible: no" in captured.out and "gait_stride>=1.0" in captured.out


def test_cli_errors_are_one_message_and_exit_2(trained_run, capsys):
    code = main(["optimize", "--run", str(trained_run), "--target", "cot_ma15", "--fix", "gait_cadence=fast"])
    assert code == 2
    assert capsys.readouterr().err == "rollfit optimize: error: --fix gait_cadence: expected a number, but got 'fast'\n"
    code = main(["optimize", "--run", str(trained_run), "--target", "cot_ma15", "--constraint", "gait_stride*(2"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err[0] == ("rollfit optimize: error: constraint 'gait_stride*(2', column 15: expected ')' "
                                    "to close the '(' at column 13, but got the end of the expression")


def test_cli_sweep_optimum_writes_csv_and_plot(trained_run, tmp_path, capsys):
    out = tmp_path / "sweep" / "speed.csv"
    code = main(["sweep-optimum", "--run", str(trained_run), "--target", "cot_ma15", "--vary", "speed=0.9:1.2:4",
                 "--constraint", "gait_stride*gait_cadence=speed", "--starts", "16", "--output", str(out)])
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == ("speed,gait_cadence,gait_stride,cot_ma15,objective,feasible,max_violation,"
                        "distance_to_nearest_training_point")
    rows = [dict(zip(lines[0].split(","), ln.split(","))) for ln in lines[1:]]
    assert [float(r["speed"]) for r in rows] == [0.9, 1.0, 1.1, 1.2]
    for r in rows:
        assert float(r["gait_stride"]) * float(r["gait_cadence"]) == pytest.approx(float(r["speed"]), abs=1e-9)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {out}" in capsys.readouterr().out


def test_run_of_the_original_pipeline(fixtures_dir):
    """No recorded ranges: mean +- 2 std, with a warning; data found relative to the run folder."""
    sur = Surrogate.load(fixtures_dir / "reference_run")
    res = opt.optimize(sur, "cot_ma15", starts=8, steps=200)
    assert res.feasible
    assert res.warnings[0] == "the checkpoint records no input ranges: search ranges are the training mean +- 2 std"
    lo, hi = sur._bounds_arrays()
    assert all(lo[i] <= res.inputs[k] <= hi[i] for i, k in enumerate(sur.in_lbl))
    assert res.distance_to_nearest_training_point is not None and "u225.h5" in res.distance_note
