"""Uncertainty everywhere: ``Surrogate.predict(return_std=True)``, ``rollfit predict``'s
``<label>_std`` columns, std maps and 95% bands on plots, NLL and 95% coverage in
``evaluate``, and the risk-averse ``optimize --risk K``.

Most tests use ``known_std``, a model kind registered here (and removed after the module)
whose mean and standard deviation are closed-form, so every number is checked against a
hand computation: the mean is a bowl ``55 + 100 * scale * |x - centre|^2`` (a second output is
linear, ``2 (x0 - centre0)``), the std grows linearly along the first input,
``base + slope * (x0 - lo0)`` (the second output's is half of it). It has a parameter
(``scale``) and a non-parameter buffer (``centre``), as a GP's module has, so the checkpoint
round trip and optimize's float64 copy are exercised on both. The tests with the real kinds
(gp, robust_gp, ensemble) run when those kinds are registered.
"""
from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from rollfit.analysis import optimize as opt
from rollfit.analysis.evaluate import Z95, evaluate_run, uncertainty_metrics
from rollfit.analysis.plots import contour_data, draw_contour, draw_slice, slice_data
from rollfit.analysis.surrogate import Surrogate
from rollfit.cli.main import main
from rollfit.errors import ConfigError
from rollfit.model import kinds
from rollfit.runs.checkpoint import load_checkpoint, save_checkpoint

KIND = "known_std"
LO, HI = 0.7, 1.3
IN = ["gait_cadence", "gait_stride"]


class KnownStd(nn.Module):
    """A model kind with a closed-form mean and std (see the module docstring)."""

    kind = KIND

    def __init__(self, input_dim: int = 2, output_dim: int = 1, centre=(1.0, 1.0), base: float = 0.5,
                 slope: float = 20.0, lo0: float = LO, input_mean=(1.0, 1.0), input_std=(0.17, 0.17)):
        super().__init__()
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.base, self.slope, self.lo0 = float(base), float(slope), float(lo0)
        self.scale = nn.Parameter(torch.ones(1))
        self.register_buffer("centre", torch.tensor(centre, dtype=torch.float32))
        self.register_buffer("input_mean", torch.tensor(input_mean, dtype=torch.float32))
        self.register_buffer("input_std", torch.tensor(input_std, dtype=torch.float32))

    def forward(self, x):
        bowl = 55.0 + 100.0 * self.scale * ((x - self.centre) ** 2).sum(dim=1)
        cols = [bowl, 2.0 * (x[:, 0] - self.centre[0])][:self.output_dim]
        return torch.stack(cols, dim=1)

    def std(self, x):
        s = self.base + self.slope * (x[:, 0] - self.lo0)
        return torch.stack([s, 0.5 * s][:self.output_dim], dim=1)

    @torch.no_grad()
    def predict(self, x):
        return self.forward(kinds.as_input(self, x))

    def predict_std(self, x):
        x = kinds.as_input(self, x)
        return self.forward(x), self.std(x)

    def constructor_args(self) -> dict:
        return {"input_dim": self.input_dim, "output_dim": self.output_dim,
                "centre": self.centre.tolist(), "base": self.base, "slope": self.slope, "lo0": self.lo0,
                "input_mean": self.input_mean.tolist(), "input_std": self.input_std.tolist()}


def _build(cfg: dict) -> KnownStd:
    return KnownStd(cfg["input_dim"], cfg["output_dim"], cfg["centre"], cfg["base"], cfg["slope"], cfg["lo0"],
                    cfg["input_mean"], cfg["input_std"])


@pytest.fixture(scope="module", autouse=True)
def known_kind():
    """Register ``known_std`` for this module only (other tests list the registered kinds)."""
    kinds._load_builtin()
    kinds.register_kind(kinds.KindSpec(KIND, _build, has_std=True, resumable=False, exports=(),
                                       summary="a closed-form test model"))
    yield
    del kinds.KINDS[KIND]


def exact_mean(x, centre=(1.0, 1.0), outputs=1):
    x = np.asarray(x, np.float64)
    cols = [55.0 + 100.0 * ((x - np.asarray(centre)) ** 2).sum(1), 2.0 * (x[:, 0] - centre[0])]
    return np.stack(cols[:outputs], 1)


def exact_std(x, base=0.5, slope=20.0, lo0=LO, outputs=1):
    s = base + slope * (np.asarray(x, np.float64)[:, 0] - lo0)
    return np.stack([s, 0.5 * s][:outputs], 1)


def _sur(outputs: int = 1) -> Surrogate:
    cfg = {"in_lbl": IN, "out_lbl": ["cot", "effort"][:outputs], "input_min": [LO, LO], "input_max": [HI, HI]}
    return Surrogate(KnownStd(output_dim=outputs), cfg)


def _std_message(kind: str, what: str = "an uncertainty") -> str:
    return (f"model kind '{kind}': expected a model with {what}, but '{kind}' predicts a mean only; train one of "
            f"{', '.join(kinds.kinds_with('has_std'))} (model.kind)")


@pytest.fixture
def std_run(trained_run, tmp_path):
    """A copy of the trained run whose only checkpoint holds a ``known_std`` model, centred in
    the run's input range (the run's data, split and labels are kept)."""
    run = tmp_path / "std_run"
    shutil.copytree(trained_run, run)
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    state = load_checkpoint(ckpts[-1])
    for p in ckpts:
        p.unlink()
    cfg = state["config"]
    lo, hi = np.asarray(cfg["input_min"]), np.asarray(cfg["input_max"])
    model = KnownStd(centre=tuple((lo + hi) / 2), lo0=float(lo[0]), input_mean=tuple(cfg["input_mean"]),
                     input_std=tuple(cfg["input_std"]))
    cfg.update(model.constructor_args(), kind=KIND)
    save_checkpoint(ckpts[-1], {"epoch": state["epoch"], "model_state_dict": model.state_dict(), "config": cfg})
    return run


def _run_exact(run):
    """(mean, std) functions of the ``known_std`` model stored in ``std_run``."""
    cfg = Surrogate.load(run).config
    return (lambda x: exact_mean(x, cfg["centre"])), (lambda x: exact_std(x, lo0=cfg["lo0"]))


# ----------------------------------------------------------------------------- Surrogate
def test_predict_with_std_is_the_models_mean_and_std():
    s = _sur(outputs=2)
    x = np.random.default_rng(0).uniform(LO, HI, (7, 2))
    mean, std = s.predict(x, return_std=True)
    assert mean.shape == std.shape == (7, 2) and s.has_std and s.kind == KIND
    np.testing.assert_allclose(mean, exact_mean(x, outputs=2), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std, exact_std(x, outputs=2), rtol=1e-6)
    np.testing.assert_array_equal(s.predict(x), mean)
    means, stds = s.predict_dict({"gait_stride": x[:, 1], "gait_cadence": x[:, 0]}, return_std=True)
    np.testing.assert_array_equal(means["effort"], mean[:, 1])
    np.testing.assert_array_equal(stds["cot"], std[:, 0])


def test_a_float64_model_gets_float64_inputs():
    """A GP computes in float64: its inputs must not be rounded to float32 on the way."""
    s = _sur()
    s.model.double()
    x = np.array([[1.0 + 1e-9, 1.0], [1.0, 1.0]])
    mean, std = s.predict(x, return_std=True)
    assert mean.dtype == np.float64 and std.dtype == np.float64
    assert std[0, 0] - std[1, 0] == pytest.approx(20.0 * 1e-9, rel=1e-5)  # lost entirely in float32


def test_mlp_has_no_std_and_says_which_kinds_have_one(trained_run):
    s = Surrogate.load(trained_run)
    assert not s.has_std and s.kind == "mlp"
    with pytest.raises(ConfigError) as exc:
        s.predict(np.ones((2, 2)), return_std=True)
    assert str(exc.value) == _std_message("mlp")
    assert KIND in str(exc.value)


def test_gradient_is_autograd_of_the_mean_for_any_kind():
    s = _sur(outputs=2)
    x = np.random.default_rng(1).uniform(LO, HI, (5, 2)).astype(np.float32)
    jac = s.gradient(x)
    assert jac.shape == (5, 2, 2)
    np.testing.assert_allclose(jac[:, 0, :], 200.0 * (x - 1.0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jac[:, 1, :], np.tile([2.0, 0.0], (5, 1)), atol=1e-6)


def test_gradient_of_an_mlp_keeps_the_forward_jacobian_result(trained_run):
    s = Surrogate.load(trained_run)
    x = torch.as_tensor(np.random.default_rng(2).uniform(0.8, 1.2, (6, 2)), dtype=torch.float32)
    with torch.no_grad():
        _, jac = s.model.forward_with_input_jacobian(x)
    if s.model.target_convention == "normalized":
        jac = jac * s.model.target_std.view(1, -1, 1)
    np.testing.assert_allclose(s.gradient(x.numpy()), jac.numpy(), rtol=1e-4, atol=1e-6)


def test_checkpoint_round_trip_through_the_kind_registry(std_run):
    s = Surrogate.load(std_run)
    assert isinstance(s.model, KnownStd) and s.has_std
    assert torch.equal(s.model.centre, torch.tensor(s.config["centre"], dtype=torch.float32))
    x = np.random.default_rng(3).uniform(0.8, 1.2, (4, 2))
    mean_of, std_of = _run_exact(std_run)
    mean, std = s.predict(x, return_std=True)
    np.testing.assert_allclose(mean, mean_of(x), rtol=1e-5)
    np.testing.assert_allclose(std, std_of(x), rtol=1e-5)


# ----------------------------------------------------------------------------- rollfit predict
def _read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_predict_writes_std_columns_after_the_means(std_run, tmp_path, capsys):
    x = np.random.default_rng(4).uniform(0.8, 1.2, (9, 2))
    src = tmp_path / "in.csv"
    lines = "".join(f"{float(a)!r},{float(b)!r},n{i}\n" for i, (a, b) in enumerate(x))
    src.write_text("gait_cadence,gait_stride,note\n" + lines)
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(std_run), "--input", str(src), "--csv", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote 9 rows with predicted cot_ma15 and their standard deviations to {out}\n"
    header, rows = _read_csv(out)
    assert header == ["gait_cadence", "gait_stride", "note", "cot_ma15", "cot_ma15_std"]
    mean_of, std_of = _run_exact(std_run)
    got = np.array([[float(r[3]), float(r[4])] for r in rows])
    np.testing.assert_allclose(got[:, 0], mean_of(x)[:, 0], rtol=1e-6)
    np.testing.assert_allclose(got[:, 1], std_of(x)[:, 0], rtol=1e-5)
    mean, std = Surrogate.load(std_run).predict(x, return_std=True)  # the CSV holds them exactly
    np.testing.assert_array_equal(got.astype(np.float32), np.concatenate([mean, std], 1))


def test_predict_std_column_names_avoid_input_columns(std_run, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("gait_cadence,gait_stride,cot_ma15_std\n1.0,1.0,keep\n")
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(std_run), "--input", str(src), "--csv", str(out)]) == 0
    header, rows = _read_csv(out)
    assert header == ["gait_cadence", "gait_stride", "cot_ma15_std", "cot_ma15", "cot_ma15_pred_std"]
    assert rows[0][2] == "keep"


def test_predict_of_an_mlp_has_no_std_columns(trained_run, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("gait_cadence,gait_stride\n1.0,1.0\n")
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(trained_run), "--input", str(src), "--csv", str(out)]) == 0
    assert _read_csv(out)[0] == ["gait_cadence", "gait_stride", "cot_ma15"]


# ----------------------------------------------------------------------------- evaluate
def test_nll_and_coverage_of_a_hand_computed_case():
    y = np.array([[0.0, 10.0], [1.0, 10.0], [3.0, 10.0]])
    mean = np.array([[0.0, 10.0], [0.0, 12.0], [0.0, 14.0]])
    std = np.array([[1.0, 2.0], [1.0, 1.0], [1.0, 2.0]])
    got = uncertainty_metrics(y, mean, std, ["a", "b"])
    # a: residuals 0, 1, 3 with std 1: NLL = 0.5 ln(2 pi) + (0 + 0.5 + 4.5) / 3; inside 1.96: 2 of 3
    assert got["a"]["nll"] == pytest.approx(0.5 * math.log(2 * math.pi) + 5.0 / 3.0, rel=1e-12)
    assert got["a"]["coverage_95"] == pytest.approx(2 / 3)
    # b: residuals 0, -2, -4 with std 2, 1, 2: NLL rows 0.5 ln(2 pi 4), 0.5 ln(2 pi) + 2, 0.5 ln(2 pi 4) + 2
    want = (math.log(2 * math.pi * 4) + 0.5 * math.log(2 * math.pi) + 4.0) / 3.0
    assert got["b"]["nll"] == pytest.approx(want, rel=1e-12)
    assert got["b"]["coverage_95"] == pytest.approx(1 / 3)  # |-2| > 1.96 * 1 and |-4| > 1.96 * 2
    with pytest.raises(ValueError, match=r"expected y_true, mean and std of shape \(N, 2\)"):
        uncertainty_metrics(y, mean, std[:2], ["a", "b"])


def test_coverage_is_the_95_percent_interval():
    """A residual just inside 1.96 std is covered, one just outside is not (Z95 = 1.95996...)."""
    got = uncertainty_metrics(np.array([[1.959], [1.961]]), np.zeros((2, 1)), np.ones((2, 1)), ["y"])
    assert got["y"]["coverage_95"] == 0.5 and Z95 == pytest.approx(1.959963984540054, abs=1e-15)


def test_evaluate_scores_held_out_rows_with_nll_and_coverage(std_run, capsys):
    ev = evaluate_run(std_run)
    assert ev.rows == "validation" and ev.y_std is not None
    mean_of, std_of = _run_exact(std_run)
    mu, sd, y = mean_of(ev.inputs)[:, 0], std_of(ev.inputs)[:, 0], ev.y_true[:, 0].astype(np.float64)
    nll = np.mean([0.5 * math.log(2 * math.pi * s * s) + (t - m) ** 2 / (2 * s * s) for t, m, s in zip(y, mu, sd)])
    cover = np.mean([abs(t - m) <= 1.959963984540054 * s for t, m, s in zip(y, mu, sd)])
    m = ev.metrics["cot_ma15"]
    assert m["nll"] == pytest.approx(nll, rel=1e-5) and m["coverage_95"] == pytest.approx(cover)
    assert main(["evaluate", "--run", str(std_run), "--json"]) == 0
    saved = json.loads((std_run / "metrics_validation.json").read_text())
    assert saved["cot_ma15"]["nll"] == pytest.approx(nll, rel=1e-5)
    assert saved["cot_ma15"]["coverage_95"] == pytest.approx(cover)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(std_run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["output", "rmse", "mae", "r2", "max_abs_error", "n", "nll", "coverage_95"]
    assert out[2].split()[-1] == f"{cover:.4g}"


def test_evaluate_of_an_mlp_has_no_uncertainty_metrics(trained_run):
    ev = evaluate_run(trained_run)
    assert ev.y_std is None and "nll" not in ev.metrics["cot_ma15"]


# ----------------------------------------------------------------------------- plots
def test_contour_and_slice_carry_the_std(std_run):
    s = Surrogate.load(std_run)
    hold = {"gait_cadence": 1.0, "gait_stride": 1.0}
    _, std_of = _run_exact(std_run)
    c = contour_data(s, IN, hold, n=7)
    gx, gy = np.meshgrid(c["x"], c["y"])
    want = std_of(np.stack([gx.ravel(), gy.ravel()], 1))[:, 0].reshape(7, 7)
    np.testing.assert_allclose(c["std"]["cot_ma15"], want, rtol=1e-5)
    sl = slice_data(s, "gait_cadence", hold, n=11)
    np.testing.assert_allclose(sl["std"]["cot_ma15"], std_of(np.stack([sl["x"], np.ones(11)], 1))[:, 0], rtol=1e-5)
    fig = draw_contour(c)  # the mean map, the std map beside it, then their two colorbars
    assert len(fig.axes) == 4
    assert not fig.axes[0].get_title().startswith("std of")
    assert fig.axes[1].get_title().startswith("std of cot_ma15 (a new observation)")
    band = [col for col in draw_slice(sl).axes[0].collections if col.get_label().startswith("95% interval")]
    assert len(band) == 1
    lower = band[0].get_paths()[0].vertices[:, 1].min()
    assert lower == pytest.approx(float((sl["pred"]["cot_ma15"] - Z95 * sl["std"]["cot_ma15"]).min()), rel=1e-6)


def test_plots_of_an_mlp_are_unchanged(trained_run):
    s = Surrogate.load(trained_run)
    hold = {"gait_cadence": 1.0, "gait_stride": 1.0}
    c = contour_data(s, IN, hold, n=5)
    sl = slice_data(s, "gait_cadence", hold, n=5)
    assert c["std"] is None and sl["std"] is None
    assert len(draw_contour(c).axes) == 2  # one map and its colorbar
    assert not [col for col in draw_slice(sl).axes[0].collections if col.get_label().startswith("95%")]


def test_plot_and_report_of_a_model_with_std(std_run, capsys):
    assert main(["plot", "--run", str(std_run)]) == 0
    assert (std_run / "plots" / "contour_gait_cadence_gait_stride.png").is_file()
    assert main(["report", "--run", str(std_run)]) == 0
    page = (std_run / "report.html").read_text()
    assert "coverage_95" in page and "<th>nll</th>" in page


# ----------------------------------------------------------------------------- optimize
def test_target_std_is_the_delta_method():
    target = opt.parse_target("cot + 10*effort", ["cot", "effort"])
    mean = torch.tensor([[55.0, 1.0], [60.0, -1.0]], dtype=torch.float64)
    std = torch.tensor([[2.0, 0.3], [1.0, 0.5]], dtype=torch.float64)
    f, sf = opt.target_with_std(target, ["cot", "effort"], mean, std)
    assert f.tolist() == [65.0, 50.0]
    np.testing.assert_allclose(sf.numpy(), [math.hypot(2.0, 3.0), math.hypot(1.0, 5.0)], rtol=1e-12)
    single = opt.target_with_std(opt.parse_target("effort", ["cot", "effort"]), ["cot", "effort"], mean, std)[1]
    np.testing.assert_allclose(single.numpy(), [0.3, 0.5], rtol=1e-12)


def test_risk_moves_the_optimum_to_the_hand_computed_point():
    """mean + k std = 55 + 100 |x - 1|^2 + k (0.5 + 20 (x0 - 0.7)): x0* = 1 - k / 10."""
    s = _sur()
    plain = s.optimize("cot", starts=16, distances=False)
    assert plain.inputs["gait_cadence"] == pytest.approx(1.0, abs=1e-4) and plain.risk == 0.0
    assert plain.output_std["cot"] == pytest.approx(6.5, rel=1e-5) and plain.objective_std == pytest.approx(6.5, 1e-5)
    res = s.optimize("cot", starts=16, distances=False, risk=2.0)
    assert res.inputs["gait_cadence"] == pytest.approx(0.8, abs=1e-4)
    assert res.inputs["gait_stride"] == pytest.approx(1.0, abs=1e-4)
    assert res.objective == pytest.approx(59.0, abs=1e-3) and res.output_std["cot"] == pytest.approx(2.5, rel=1e-4)
    assert res.risk_objective == pytest.approx(64.0, abs=1e-3) and res.risk == 2.0


def test_risk_when_maximizing_subtracts_the_std():
    """effort = 2 (x0 - 1), std 0.25 + 10 (x0 - 0.7): effort - k std rises in x0 for k < 0.2, falls above."""
    s = _sur(outputs=2)
    bold = s.optimize("effort", maximize=True, starts=8, distances=False, risk=0.1)
    careful = s.optimize("effort", maximize=True, starts=8, distances=False, risk=0.3)
    assert bold.inputs["gait_cadence"] == pytest.approx(HI, abs=1e-6)
    assert careful.inputs["gait_cadence"] == pytest.approx(LO, abs=1e-6)
    assert careful.risk_objective == pytest.approx(-0.6 - 0.3 * 0.25, abs=1e-6)


def test_risk_objective_gradient_matches_finite_differences():
    s = _sur(outputs=2)
    prob = opt._build_problem(s, "cot + 10*effort", False, {}, None, ["gait_stride*gait_cadence=1.2"], {}, 1, 1.5)
    ev = opt._Evaluator(s, prob, 5, torch.device("cpu"))
    assert ev.model.centre.dtype == torch.float64  # the float64 copy converted the buffer too
    u = torch.rand(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    f = lambda v: ev.objective(ev.inputs(v))  # noqa: E731
    grad, = torch.autograd.grad(f(u).sum(), u)
    h = 1e-6
    for j in range(2):
        e = torch.zeros_like(u)
        e[:, j] = h
        fd = (f(u.detach() + e) - f(u.detach() - e)) / (2 * h)
        assert torch.allclose(grad[:, j], fd, rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # the same value without autograd (the solver's pick and scaling)
        assert torch.allclose(f(u.detach()), f(u).detach(), rtol=1e-12)


def test_sweep_with_risk_has_std_columns():
    s = _sur()
    sweep = s.sweep_optimum("cot", {"gait_stride": [0.9, 1.1]}, starts=8, distances=False, risk=2.0)
    assert sweep.columns == ["gait_stride", "gait_cadence", "cot", "cot_std", "objective", "objective_std",
                             "risk_objective", "feasible", "max_violation", "distance_to_nearest_training_point"]
    for row in sweep.rows:
        assert row["gait_cadence"] == pytest.approx(0.8, abs=1e-4)
        assert row["risk_objective"] == pytest.approx(row["objective"] + 2.0 * row["cot_std"], rel=1e-9)
    line, = opt.sweep_plot_data(sweep, IN)["lines"]
    assert line["objective_std"] == [r["objective_std"] for r in sweep.rows]
    fig = opt.plot_sweep(sweep, IN)
    assert fig.axes[0].get_title() == "risk-averse optimum (+2 std) of cot along gait_stride, 95% band shaded"
    objective_axis = fig.axes[-1]
    band = objective_axis.collections[0].get_paths()[0].vertices[:, 1]
    low = min(r["objective"] - Z95 * r["objective_std"] for r in sweep.rows)
    assert band.min() == pytest.approx(low, rel=1e-9)  # the 95% band of the objective


@pytest.mark.parametrize("risk, message", [
    (-1.0, "risk: expected a finite number >= 0 (0: minimize the mean), but got -1.0"),
    (float("nan"), "risk: expected a finite number >= 0 (0: minimize the mean), but got nan"),
    ("high", "risk: expected a finite number >= 0 (0: minimize the mean), but got 'high'"),
])
def test_bad_risk_is_a_one_line_error(risk, message):
    with pytest.raises(ConfigError) as exc:
        _sur().optimize("cot", risk=risk, distances=False)
    assert str(exc.value) == message


def test_risk_with_an_mlp_is_the_one_line_error(trained_run, capsys):
    s = Surrogate.load(trained_run)
    what = "an uncertainty (risk > 0 optimizes mean + risk * std)"
    with pytest.raises(ConfigError) as exc:
        s.optimize("cot_ma15", risk=1.0, distances=False)
    assert str(exc.value) == _std_message("mlp", what)
    assert s.optimize("cot_ma15", risk=0.0, starts=4, steps=16, distances=False).output_std == {}
    assert main(["optimize", "--run", str(trained_run), "--target", "cot_ma15", "--risk", "1"]) == 2
    assert capsys.readouterr().err == f"rollfit optimize: error: {_std_message('mlp', what)}\n"
    assert main(["optimize", "--run", str(trained_run), "--target", "cot_ma15", "--risk", "-1"]) == 2
    assert "--risk: expected a finite number >= 0, but got '-1'" in capsys.readouterr().err


def test_optimize_cli_with_risk(std_run, tmp_path, capsys):
    cfg = Surrogate.load(std_run).config
    assert main(["optimize", "--run", str(std_run), "--target", "cot_ma15", "--risk", "2", "--starts", "8",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    # x0* = centre0 - k slope / 200 (see test_risk_moves_the_optimum_to_the_hand_computed_point)
    assert res["inputs"]["gait_cadence"] == pytest.approx(cfg["centre"][0] - 0.2, abs=1e-4)
    assert res["risk"] == 2.0 and res["risk_objective"] > res["objective"]
    assert main(["optimize", "--run", str(std_run), "--target", "cot_ma15", "--risk", "2", "--starts", "8"]) == 0
    out = capsys.readouterr().out
    assert "risk-averse objective (cot_ma15 + 2*std, the one optimized): " in out and "std of the objective" in out
    path = tmp_path / "path.csv"
    assert main(["optimize", "--run", str(std_run), "--target", "cot_ma15", "--risk", "2", "--starts", "8",
                 "--vary", "gait_stride=0.9:1.1:3", "--csv", str(path), "--no-plot"]) == 0
    header, rows = _read_csv(path)
    assert header[:4] == ["gait_stride", "gait_cadence", "cot_ma15", "cot_ma15_std"] and len(rows) == 3


# ----------------------------------------------------------------------------- the real kinds
ENSEMBLE = ["model.kind=ensemble", "model.members=4", "model.layers=[16,16]", "trainer.max_epochs=200",
            "trainer.save_period=100", "trainer.log_period=20", "trainer.progress=false", "trainer.report=false",
            "data.train_split=0.8", "trainer.lr=0.01", "data.cache=false"]
GP = ["model.kind=gp", "trainer.progress=false", "trainer.report=false", "data.train_split=0.8", "data.cache=false"]


def _train_kind(kind, overrides, tmp_path_factory, demo_file):
    from conftest import demo_config
    from rollfit.pipeline.run import train

    kinds._load_builtin()
    if kind not in kinds.KINDS:
        pytest.skip(f"model kind '{kind}' is not registered in this checkout")
    return train(demo_config(demo_file, overrides), tmp_path_factory.mktemp(kind) / "run").run_dir


ROBUST_GP = ["model.kind=robust_gp", *GP[1:]]


@pytest.fixture(scope="module", params=["ensemble", "gp", pytest.param("robust_gp", marks=pytest.mark.slow)])
def kind_run(request, tmp_path_factory, demo_file):
    """A short real run of each kind with an uncertainty (robust_gp's relevance pursuit takes minutes)."""
    overrides = {"ensemble": ENSEMBLE, "gp": GP, "robust_gp": ROBUST_GP}[request.param]
    return _train_kind(request.param, overrides, tmp_path_factory, demo_file)


def test_real_kind_predicts_evaluates_and_plots_with_std(kind_run, tmp_path):
    s = Surrogate.load(kind_run)
    assert s.has_std and s.kind in ("ensemble", "gp", "robust_gp")
    x = np.random.default_rng(5).uniform(0.8, 1.2, (6, 2))
    mean, std = s.predict(x, return_std=True)
    np.testing.assert_allclose(mean, s.predict(x), rtol=1e-6)
    assert np.all(std > 0) and np.all(np.isfinite(std))
    ev = evaluate_run(s)
    want = uncertainty_metrics(ev.y_true, *s.predict(ev.inputs, return_std=True), s.out_lbl)
    assert ev.metrics["cot_ma15"]["nll"] == pytest.approx(want["cot_ma15"]["nll"], rel=1e-9)
    assert 0.5 <= ev.metrics["cot_ma15"]["coverage_95"] <= 1.0  # a 95% interval that means something
    c = contour_data(s, IN, {"gait_cadence": 1.0, "gait_stride": 1.0}, n=5)
    assert np.all(c["std"]["cot_ma15"] > 0)
    out = tmp_path / "pred.csv"
    src = tmp_path / "in.csv"
    src.write_text("gait_cadence,gait_stride\n1.0,1.0\n")
    assert main(["predict", "--run", str(kind_run), "--input", str(src), "--csv", str(out)]) == 0
    header, rows = _read_csv(out)
    assert header == ["gait_cadence", "gait_stride", "cot_ma15", "cot_ma15_std"]
    assert float(rows[0][3]) == pytest.approx(float(s.predict(np.ones((1, 2)), return_std=True)[1][0, 0]), rel=1e-6)


def test_real_kind_gradient_matches_finite_differences(kind_run):
    s = Surrogate.load(kind_run)
    s.model.double()
    x = np.random.default_rng(6).uniform(0.85, 1.15, (4, 2))
    # h balances truncation (h^2) against the rounding of a GP's solve (~1e-10 / h): a smooth
    # bowl's likelihood is highest near the polynomial limit, whose kernel matrix is ill-conditioned
    h = 1e-4
    fd = np.stack([(s.predict(x + h * e) - s.predict(x - h * e)) / (2 * h) for e in np.eye(2)], axis=2)
    np.testing.assert_allclose(s.gradient(x), fd, rtol=1e-5, atol=1e-6)


def test_real_kind_risk_averse_optimum(kind_run):
    """The risk-averse optimum scores at least as well on mean + 2 std as the mean's optimum
    does, and no better on the mean alone (it trades mean for certainty)."""
    s = Surrogate.load(kind_run)
    plain = s.optimize("cot_ma15", starts=16, steps=200, distances=False)
    risky = s.optimize("cot_ma15", starts=16, steps=200, distances=False, risk=2.0)
    assert plain.objective_std is not None and risky.risk == 2.0

    def risk_value(res):
        x = np.array([[res.inputs[k] for k in IN]])
        mean, std = s.predict(x, return_std=True)
        return float(mean[0, 0] + 2.0 * std[0, 0]), float(mean[0, 0])

    assert risky.risk_objective == pytest.approx(risk_value(risky)[0], rel=1e-6)
    assert risk_value(risky)[0] <= risk_value(plain)[0] + 1e-6 * abs(risk_value(plain)[0])
    assert risk_value(plain)[1] <= risk_value(risky)[1] + 1e-6 * abs(risk_value(plain)[1])
