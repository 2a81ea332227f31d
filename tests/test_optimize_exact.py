"""``optimize`` and ``sweep_optimum`` on a network built by hand, whose function is known exactly.

The network has one GELU layer: units ``gelu(z_k)`` and ``gelu(-z_k)`` with ``z_k = a_k . (x - x*)``.
Since ``gelu(z) + gelu(-z) = z erf(z / sqrt 2)`` (convex, minimum 0 at 0) and
``gelu(z) - gelu(-z) = z``, output ``cot`` is a convex bowl with minimum 55 at ``x*`` and output
``effort`` is linear. Every answer is compared with a dense search of the same exact function,
so the tolerances measure the optimizer alone (float64 throughout).
"""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from rollfit.analysis import optimize as opt
from rollfit.analysis.surrogate import Surrogate
from rollfit.errors import ConfigError
from rollfit.model.network import RegressionNet

IN = ["gait_cadence", "gait_stride"]
CENTRE = np.array([0.95, 1.05])
A = np.array([[4.0, 0.0], [0.0, 5.0], [3.0, 3.0]])
C = np.array([1.0, 0.8, 0.5])  # weights of the bowl terms
E = np.array([0.5, 0.0, 0.0])  # weights of the linear terms: effort = 2 * (cadence - 0.95)
MEAN, STD = np.array([1.0, 1.0]), np.array([0.17, 0.17])
LO, HI = 0.7, 1.3
_erf = np.vectorize(math.erf)


def exact_cot(x: np.ndarray) -> np.ndarray:
    z = (np.asarray(x, np.float64) - CENTRE) @ A.T
    return 55.0 + 10.0 * (C * z * _erf(z / math.sqrt(2.0))).sum(-1)


def exact_effort(x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.float64) - CENTRE) @ A.T * E).sum(-1)


def exact_net() -> RegressionNet:
    """The hand-built network (normalized inputs and targets, as rollfit trains them)."""
    net = RegressionNet(2, 2, [2 * len(A)], input_mean=torch.tensor(MEAN), input_std=torch.tensor(STD),
                        target_mean=torch.tensor([55.0, 0.0]), target_std=torch.tensor([10.0, 1.0]),
                        residual=False, activation="gelu", target_convention="normalized")
    w = np.concatenate([A * STD, -A * STD])  # z = a.(x - x*) from the normalized input
    b = np.concatenate([A @ (MEAN - CENTRE), -A @ (MEAN - CENTRE)])
    out = np.stack([np.concatenate([C, C]), np.concatenate([E, -E])])
    layers = net.mlp.mlp
    with torch.no_grad():
        layers.input.weight.copy_(torch.tensor(w))
        layers.input.bias.copy_(torch.tensor(b))
        layers.output.weight.copy_(torch.tensor(out))
        layers.output.bias.zero_()
    return net


@pytest.fixture(scope="module")
def sur() -> Surrogate:
    cfg = {"in_lbl": IN, "out_lbl": ["cot", "effort"], "input_min": [LO, LO], "input_max": [HI, HI]}
    return Surrogate(exact_net(), cfg)


def curve_argmin(f, n: int = 400001) -> tuple[np.ndarray, float]:
    """Dense 1-D search: f maps a parameter grid on [0, 1] to (points (n, 2), values)."""
    t = np.linspace(0.0, 1.0, n)
    pts, vals = f(t)
    i = int(np.argmin(vals))
    return pts[i], float(vals[i])


def in_box(pts: np.ndarray) -> np.ndarray:
    return np.all((pts >= LO) & (pts <= HI), axis=1)


def xy(res) -> np.ndarray:
    return np.array([res.inputs[k] for k in IN])


def test_the_network_is_the_known_function(sur):
    x = np.random.default_rng(0).uniform(LO, HI, (50, 2))
    y = sur.predict(x)
    assert np.abs(y[:, 0] - exact_cot(x)).max() < 1e-4  # float32 prediction
    assert np.abs(y[:, 1] - exact_effort(x)).max() < 1e-5


def test_unconstrained_minimum(sur):
    res = sur.optimize("cot")
    assert res.feasible and res.constraints == {}
    assert np.abs(xy(res) - CENTRE).max() < 1e-5
    assert res.objective == pytest.approx(55.0, abs=1e-4)
    assert res.distance_to_nearest_training_point is None
    assert "does not record its training data" in res.distance_note


def test_fixed_input(sur):
    res = opt.optimize(sur, "cot", fix={"gait_cadence": 1.2})
    best, _ = curve_argmin(lambda t: ((p := np.stack([np.full_like(t, 1.2), LO + t * (HI - LO)], 1)), exact_cot(p)))
    assert res.inputs["gait_cadence"] == 1.2 and res.fixed == {"gait_cadence": 1.2}
    assert abs(res.inputs["gait_stride"] - best[1]) < 1e-5
    assert list(res.bounds) == ["gait_stride"]


def test_product_equality(sur):
    res = opt.optimize(sur, "cot", constraints=["gait_stride*gait_cadence=1.2"])

    def along(t):
        s = LO + t * (HI - LO)
        p = np.stack([1.2 / s, s], 1)
        return p, np.where(in_box(p), exact_cot(p), np.inf)

    best, fbest = curve_argmin(along)
    assert res.feasible
    assert abs(res.constraints["gait_stride*gait_cadence=1.2"]) < 1e-9
    assert np.abs(xy(res) - best).max() < 1e-4
    assert res.objective == pytest.approx(fbest, abs=1e-4)


def test_active_inequality(sur):
    """s/c >= 1.3 cuts off the bowl's centre: the optimum lies on s = 1.3 c."""
    res = opt.optimize(sur, "cot", constraints=["gait_stride/gait_cadence>=1.3"])

    def boundary(t):
        c = LO + t * (HI - LO)
        p = np.stack([c, 1.3 * c], 1)
        return p, np.where(in_box(p), exact_cot(p), np.inf)

    best, fbest = curve_argmin(boundary)
    g = np.stack(np.meshgrid(np.linspace(LO, HI, 301), np.linspace(LO, HI, 301)), -1).reshape(-1, 2)
    inside = g[g[:, 1] / g[:, 0] >= 1.3]
    assert res.feasible and res.constraints["gait_stride/gait_cadence>=1.3"] > -1e-9
    assert np.abs(xy(res) - best).max() < 1e-4
    assert res.objective <= exact_cot(inside).min() + 1e-4  # no feasible grid point is better


def test_inactive_inequality_leaves_the_minimum(sur):
    res = opt.optimize(sur, "cot", constraints=["gait_stride <= 1.2"], starts=16)
    assert np.abs(xy(res) - CENTRE).max() < 1e-5
    assert res.constraints["gait_stride <= 1.2"] == pytest.approx(1.05 - 1.2)


def test_weighted_sum_of_outputs(sur):
    res = opt.optimize(sur, "cot + 5*effort")
    g = np.stack(np.meshgrid(np.linspace(0.8, 1.1, 601), np.linspace(0.9, 1.2, 601)), -1).reshape(-1, 2)
    f = exact_cot(g) + 5 * exact_effort(g)
    assert np.abs(xy(res) - g[np.argmin(f)]).max() < 1e-3  # grid step 5e-4
    assert res.objective <= f.min() + 1e-4
    assert res.objective == pytest.approx(res.outputs["cot"] + 5 * res.outputs["effort"])


def test_maximize_picks_the_best_corner(sur):
    """A convex bowl's maximum over a box is at a corner; starts end at different corners."""
    res = opt.optimize(sur, "cot", maximize=True)
    corners = np.array([[a, b] for a in (LO, HI) for b in (LO, HI)])
    assert np.abs(xy(res) - corners[np.argmax(exact_cot(corners))]).max() < 1e-9
    assert res.maximize and len([w for w in res.warnings if "end of its search range" in w]) == 2


def test_infeasible_problem_is_reported(sur):
    res = opt.optimize(sur, "cot", constraints=["gait_stride*gait_cadence=3"], steps=200, starts=8)
    assert not res.feasible and res.feasible_starts == 0
    assert np.abs(xy(res) - HI).max() < 1e-9  # the closest point: the far corner
    assert res.message == ("infeasible: no start satisfies the constraints within the search range; the closest "
                           "point misses 'gait_stride*gait_cadence=3' by 1.31")
    assert res.max_violation == pytest.approx(3 - 1.69)


def test_fixed_value_outside_training_range_warns(sur):
    res = opt.optimize(sur, "cot", fix={"gait_cadence": 1.5}, steps=200, starts=8)
    assert res.inputs["gait_cadence"] == 1.5 and res.feasible
    assert "gait_cadence=1.5 is outside the training range [0.7, 1.3]: the model extrapolates there" in res.warnings


def test_bounds_override_the_training_range(sur):
    res = opt.optimize(sur, "cot", bounds={"gait_stride": (0.8, 1.0), "gait_cadence": (None, 1.4)})
    assert res.bounds == {"gait_cadence": (0.7, 1.4), "gait_stride": (0.8, 1.0)}
    assert res.inputs["gait_stride"] == pytest.approx(1.0, abs=1e-9)
    assert ("gait_stride=1 is at the upper end of its search range [0.8, 1]: the optimum may lie beyond it"
            in res.warnings)
    assert any(w.startswith("bounds gait_cadence=[0.7, 1.4] reach outside the training range") for w in res.warnings)


def test_everything_fixed_just_evaluates(sur):
    res = opt.optimize(sur, "cot", fix={"gait_cadence": 1.0, "gait_stride": 1.0}, constraints=["gait_stride<=2"])
    assert res.starts == 1 and res.feasible
    assert res.objective == pytest.approx(float(exact_cot(np.array([1.0, 1.0]))), abs=1e-4)


def test_same_seed_same_answer_and_distance_to_given_rows(sur):
    train = np.random.default_rng(1).uniform(LO, HI, (40, 2))
    a = opt.optimize(sur, "cot", maximize=True, starts=4, steps=160, training_inputs=train)
    b = opt.optimize(sur, "cot", maximize=True, starts=4, steps=160, training_inputs=train)
    assert a.inputs == b.inputs
    d = np.sqrt((((train - xy(a)) / STD) ** 2).sum(1))
    assert a.distance_to_nearest_training_point == pytest.approx(d.min())
    assert a.nearest_training_point == {k: pytest.approx(v) for k, v in zip(IN, train[np.argmin(d)])}


@pytest.mark.parametrize("kwargs, message", [
    (dict(fix={"gait_cadense": 1.0}),
     "fix: expected an input label, but got 'gait_cadense'; did you mean 'gait_cadence'?"),
    (dict(bounds={"gait_stride": (1.1, 0.9)}), "bounds gait_stride: expected finite low <= high, but got (1.1, 0.9)"),
    (dict(fix={"gait_stride": 1.0}, bounds={"gait_stride": (0.8, 1.2)}),
     "gait_stride: expected either a fixed value or bounds, but got both"),
    (dict(starts=0), "starts: expected a positive number of starts, but got 0"),
    (dict(device="gpu0"), "device: expected a torch device such as cpu, cuda or auto, but got 'gpu0'"),
    (dict(fix={"gait_stride": float("nan")}), "fix gait_stride: expected a finite number, but got nan"),
])
def test_option_errors(sur, kwargs, message):
    with pytest.raises(ConfigError) as info:
        opt.optimize(sur, "cot", **kwargs)
    assert str(info.value) == message


# ----------------------------------------------------------------------------- gradients
def _evaluator(sur, constraints):
    prob = opt._build_problem(sur, "cot + 2*effort", False, {}, None, constraints, {}, 1)
    return opt._Evaluator(sur, prob, 5, torch.device("cpu"))


def test_objective_and_constraint_gradients_match_finite_differences(sur):
    """The solver's gradients (through the model, the box map and the expressions) are right."""
    ev = _evaluator(sur, ["gait_stride*gait_cadence=1.2", "gait_stride/gait_cadence<=1.1"])
    u = torch.rand(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    funcs = [lambda v: ev.objective(ev.inputs(v))] + [lambda v, j=j: ev.residuals(ev.inputs(v))[:, j] for j in range(2)]
    h = 1e-6
    for f in funcs:
        grad, = torch.autograd.grad(f(u).sum(), u)
        for j in range(2):
            e = torch.zeros_like(u)
            e[:, j] = h
            fd = (f(u.detach() + e) - f(u.detach() - e)) / (2 * h)
            assert torch.allclose(grad[:, j], fd, rtol=1e-6, atol=1e-6)


def test_lagrangian_gradient_matches_finite_differences(sur):
    ev = _evaluator(sur, ["gait_stride*gait_cadence=1.2", "gait_stride/gait_cadence<=1.1"])
    sc = opt._scaling(ev, 2, 0)
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(5, 2, dtype=torch.float64, generator=gen).requires_grad_(True)
    lam, mu = torch.randn(5, 2, dtype=torch.float64, generator=gen).abs(), torch.full((5, 1), 30.0, dtype=torch.float64)
    L = lambda v: opt._lagrangian(ev, v, lam, mu, sc)  # noqa: E731
    grad, = torch.autograd.grad(L(u).sum(), u)
    h = 1e-6
    for j in range(2):
        e = torch.zeros_like(u)
        e[:, j] = h
        assert torch.allclose(grad[:, j], (L(u.detach() + e) - L(u.detach() - e)) / (2 * h), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- sweeps
def test_sweep_over_a_constraint_symbol(sur, tmp_path):
    speeds = [0.9, 1.0, 1.2]
    sweep = sur.sweep_optimum("cot", {"speed": speeds}, constraints=["gait_stride*gait_cadence=speed"], starts=16)
    assert sweep.columns == ["speed", "gait_cadence", "gait_stride", "cot", "effort", "objective", "feasible",
                             "max_violation", "distance_to_nearest_training_point"]
    for v, row in zip(speeds, sweep.rows):
        def along(t, v=v):
            s = LO + t * (HI - LO)
            p = np.stack([v / s, s], 1)
            return p, np.where(in_box(p), exact_cot(p), np.inf)
        best, _ = curve_argmin(along)
        assert row["speed"] == v and row["feasible"]
        assert abs(row["gait_stride"] * row["gait_cadence"] - v) < 1e-9
        assert abs(row["gait_stride"] - best[1]) < 1e-4
    path = opt.write_sweep_csv(sweep, tmp_path / "s.csv")
    with open(path, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert [float(r["gait_stride"]) for r in back] == [r["gait_stride"] for r in sweep.rows]  # exact round trip
    assert [r["feasible"] for r in back] == ["True"] * 3
    assert back[0]["distance_to_nearest_training_point"] == ""


def test_sweep_over_an_input_and_a_grid_of_two(sur, tmp_path):
    sweep = opt.sweep_optimum(sur, "cot", {"gait_cadence": [0.8, 1.2], "bound": [1.0, 1.1]},
                              constraints=["gait_stride <= bound"], starts=8, steps=400)
    assert [(r["gait_cadence"], r["bound"]) for r in sweep.rows] == [(0.8, 1.0), (0.8, 1.1), (1.2, 1.0), (1.2, 1.1)]
    for r in sweep.rows:
        best, _ = curve_argmin(lambda t, r=r: ((p := np.stack([np.full_like(t, r["gait_cadence"]),
                                                               LO + t * (r["bound"] - LO)], 1)), exact_cot(p)))
        assert abs(r["gait_stride"] - best[1]) < 1e-4
    data = opt.sweep_plot_data(sweep, IN)
    assert data["x"] == "gait_cadence" and data["panels"] == ["gait_stride", "objective"]
    assert [line["label"] for line in data["lines"]] == ["bound=1", "bound=1.1"]
    png = opt.write_sweep_plot(sweep, IN, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("vary, kwargs, message", [
    ({"speed": [1.0]}, {}, "vary speed: expected an input label or a name used in a constraint, but got 'speed'"),
    ({"gait_cadence": [1.0]}, dict(fix={"gait_cadence": 1.0}),
     "gait_cadence: expected either a fixed value or a swept one, but got both"),
    ({"speed": []}, {}, "vary speed: expected one or more finite values, but got []"),
])
def test_sweep_errors(sur, vary, kwargs, message):
    with pytest.raises(ConfigError) as info:
        opt.sweep_optimum(sur, "cot", vary, **kwargs)
    assert str(info.value) == message


@pytest.mark.gpu
def test_gpu_gives_the_cpu_answer(sur):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = opt.optimize(sur, "cot", constraints=["gait_stride*gait_cadence=1.2"])
    gpu = opt.optimize(sur, "cot", constraints=["gait_stride*gait_cadence=1.2"], device="cuda")
    assert np.abs(xy(cpu) - xy(gpu)).max() < 1e-6
