"""``suggest``: what to simulate next (issue 13).

Known answers: with data at both ends of a 1-D range, exploring proposes the middle; on a
bowl, minimizing proposes near its minimum. Bounds, fixed inputs and constraints hold
exactly (an equality to 1e-9 relative); the output file lists every parameter of the
training files in their order, param_idx continuing after the largest index; bad requests
are one-line errors. A BoTorch SingleTaskGP fitted here stands in for a trained run's model
(``FittedGP``: the face a GP kind shows to suggest), so these tests need no training.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rollfit.analysis.surrogate import Surrogate
from rollfit.analysis.suggest import EQ_TOL, parse_goal, read_campaign, suggest
from rollfit.data.synthetic import write_rollout_file
from rollfit.errors import ConfigError


class FittedGP(torch.nn.Module):
    """A BoTorch SingleTaskGP (Matern, inputs to the unit cube, standardized outputs) with
    the ``Predictor`` face of a GP kind: raw inputs, ``botorch_model()``, ``predict_std``."""

    kind = "gp"

    def __init__(self, x: np.ndarray, y: np.ndarray, noise: float = 1e-4, lengthscale: float | None = None):
        super().__init__()
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Normalize, Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood

        X = torch.as_tensor(x, dtype=torch.float64)
        Y = torch.as_tensor(y, dtype=torch.float64).reshape(len(X), -1)
        self.gp = SingleTaskGP(X, Y, train_Yvar=torch.full_like(Y, noise) * Y.var(0, keepdim=True),
                               input_transform=Normalize(X.shape[1]), outcome_transform=Standardize(Y.shape[1]))
        if lengthscale is None:
            torch.manual_seed(0)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(self.gp.likelihood, self.gp))
        else:  # known hyperparameters: the acquisition's answer is then known too
            self.gp.covar_module.lengthscale = lengthscale
        self.gp.eval()
        self.register_buffer("input_mean", X.mean(0))
        self.register_buffer("input_std", X.std(0))
        self.input_dim, self.output_dim = X.shape[1], Y.shape[1]

    def botorch_model(self):
        return self.gp

    def forward(self, x):
        return self.gp.posterior(x.to(torch.float64)).mean

    def predict(self, x):
        with torch.no_grad():
            return self.forward(x)

    def predict_std(self, x):
        with torch.no_grad():
            post = self.gp.posterior(torch.as_tensor(x, dtype=torch.float64), observation_noise=True)
        return post.mean, post.variance.clamp_min(0).sqrt()


def make_surrogate(tmp_path: Path, names: list[str], x_all: np.ndarray, used: list[str], y: np.ndarray,
                   model=None, success=None, start_index: int = 0, label: str = "y") -> Surrogate:
    """A rollout file of ``x_all`` (columns ``names``) and a GP on the ``used`` columns."""
    path = write_rollout_file(tmp_path / "rollout_data.h5", x_all, {label: y}, success, param_names=names,
                              start_index=start_index)
    ok = np.ones(len(y), bool) if success is None else np.asarray(success, bool)
    x = x_all[ok][:, [names.index(u) for u in used]].astype(np.float64)
    model = model if model is not None else FittedGP(x, y[ok])
    cfg = {"in_lbl": used, "out_lbl": [label], "input_min": x.min(0).tolist(), "input_max": x.max(0).tolist(),
           "run_config": {"data": {"hdf5_path": str(path), "cache": False}}}
    return Surrogate(model, cfg)


def bowl(x: np.ndarray) -> np.ndarray:
    return 10 * (x[:, 0] - 0.3) ** 2 + 10 * (x[:, 1] - 0.6) ** 2


@pytest.fixture(scope="module")
def square(tmp_path_factory) -> Surrogate:
    """A GP of the bowl on a 16-point Sobol design of [0, 1]^2, inputs a and b."""
    x = torch.quasirandom.SobolEngine(2, scramble=True, seed=3).draw(16, dtype=torch.float64).numpy()
    x[0], x[1] = [0.0, 0.0], [1.0, 1.0]  # the training range is the whole square
    return make_surrogate(tmp_path_factory.mktemp("square"), ["a", "b"], x.astype(np.float32), ["a", "b"],
                          bowl(x.astype(np.float32).astype(np.float64)))


# ----------------------------------------------------------------------------- known answers
def test_explore_in_1d_with_data_at_both_ends_proposes_the_middle(tmp_path):
    x = np.array([[0.0], [0.1], [0.9], [1.0]], np.float32)
    y = (x[:, 0].astype(np.float64) - 0.5) ** 2
    sur = make_surrogate(tmp_path, ["a"], x, ["a"], y, model=FittedGP(x.astype(np.float64), y, lengthscale=0.25))
    res = suggest(sur, 1)
    assert res.acquisition_name == "qNegIntegratedPosteriorVariance"
    assert abs(res.inputs[0, 0] - 0.5) < 0.03, res.inputs


def test_explore_spreads_a_batch(square):
    from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance

    res = square.suggest(6, seed=1)
    d = np.linalg.norm(res.inputs[:, None] - res.inputs[None], axis=-1) + np.eye(6)
    assert d.min() > 0.05, res.inputs  # the batch does not pile up
    mc = torch.quasirandom.SobolEngine(2, scramble=True, seed=0).draw(256, dtype=torch.float64)
    acq = qNegIntegratedPosteriorVariance(square.model.botorch_model(), mc)
    x = torch.as_tensor(res.inputs)
    with torch.no_grad():
        joint = float(acq(x[None]))
        piled = float(acq(x[int(np.argmax(res.acquisition))].expand(6, 2)[None]))
    assert joint > piled  # the batch leaves less variance than six copies of its best point


def test_explore_with_a_robust_gp_is_reproducible(tmp_path):
    """robust_gp (which BoTorch cannot condition on new points) explores by the posterior std,
    and its batch depends on the seed only, not on torch's global generator."""
    import dataclasses

    from rollfit.model import gp as G

    x = torch.quasirandom.SobolEngine(2, scramble=True, seed=5).draw(20, dtype=torch.float64).numpy()
    y = bowl(x)
    y[[3, 11]] += 25.0  # gross outliers
    model = G.GPSurrogate(torch.as_tensor(x), torch.as_tensor(y[:, None]), robust=True,
                          settings=dataclasses.replace(G.DEFAULT_SETTINGS, restarts=2, robust_restarts=1, maxiter=200))
    model.fit()
    sur = make_surrogate(tmp_path, ["a", "b"], x.astype(np.float32), ["a", "b"], y, model=model.eval())
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(suggest(sur, 3, seed=4))
    assert runs[0].acquisition_name == "qPosteriorStandardDeviation"
    np.testing.assert_array_equal(runs[0].inputs, runs[1].inputs)


def test_a_minimize_batch_of_a_gp_does_not_depend_on_torchs_global_generator(tmp_path):
    """qLogNEI prunes its baseline with posterior samples; BoTorch's default sampler for that
    takes its seed from torch's global generator: on branin (20 Sobol points) the batch moved
    by up to the whole box with it."""
    from scipy.stats import qmc

    u = qmc.Sobol(2, scramble=True, seed=3).random(32)[:20]
    x = np.column_stack([-5.0 + 15.0 * u[:, 0], 15.0 * u[:, 1]])
    y = ((x[:, 1] - 5.1 / (4 * np.pi ** 2) * x[:, 0] ** 2 + 5 / np.pi * x[:, 0] - 6) ** 2
         + 10 * (1 - 1 / (8 * np.pi)) * np.cos(x[:, 0]) + 10)
    from rollfit.model import gp as G

    from rollfit.analysis.suggest import Campaign

    model = G.GPSurrogate(torch.as_tensor(x), torch.as_tensor(y[:, None]))
    model.fit()
    sur = Surrogate(model.eval(), {"in_lbl": ["a", "b"], "out_lbl": ["y"], "input_min": [-5.0, 0.0],
                                   "input_max": [10.0, 15.0]})
    camp = Campaign(x, y[:, None], ["a", "b"], {}, [], len(x) - 1, [])
    runs = []
    for global_seed in (0, 1, 2):
        torch.manual_seed(global_seed)
        runs.append(suggest(sur, 8, goal="minimize:y", seed=3, campaign=camp).inputs)
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def test_minimize_on_a_bowl_proposes_near_its_minimum(square):
    res = suggest(square, 2, goal="minimize:y")
    assert res.acquisition_name == "qLogNoisyExpectedImprovement"
    best = np.linalg.norm(res.inputs - [0.3, 0.6], axis=1).min()
    assert best < 0.08, res.inputs


def test_a_minimize_batch_is_greedy_each_point_best_after_the_ones_before(square):
    """Sequential (greedy) selection: the first point is the best single point, and each
    next one is at least as good as random candidates added after the points before it."""
    from rollfit.analysis import suggest as S

    res = suggest(square, 3, goal="minimize:y", seed=2)
    bo = square.model.botorch_model()
    baseline = bo.train_inputs[0]
    acq = S._improve_acq(bo, parse_goal("minimize:y", ["y"]), ["y"], baseline, [], seed=2)
    x = torch.as_tensor(res.inputs)
    cand = torch.quasirandom.SobolEngine(2, scramble=True, seed=9).draw(512, dtype=torch.float64)
    with torch.no_grad():
        for j in range(3):
            batch = lambda c: torch.cat([x[:j].expand(c.shape[0], j, 2), c[:, None]], dim=1)  # noqa: E731
            chosen = float(acq(batch(x[j:j + 1])))
            assert chosen >= float(acq(batch(cand)).max()) - 1e-3, j


def test_the_chosen_points_go_in_front_of_every_batch(square):
    from rollfit.analysis import suggest as S

    bo = square.model.botorch_model()
    acq = S._improve_acq(bo, parse_goal("minimize:y", ["y"]), ["y"], bo.train_inputs[0], [], seed=0)
    region = S.Region(["a", "b"], torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), {}, [])
    wrapped = S.InRegion(acq, region)
    wrapped.chosen = torch.tensor([[0.2, 0.7]], dtype=torch.float64)
    u = torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]]], dtype=torch.float64)
    with torch.no_grad():
        expected = acq(torch.cat([wrapped.chosen.expand(2, 1, 2), u], dim=1))
        torch.testing.assert_close(wrapped(u), expected)


def test_maximize_goes_to_a_corner_of_the_bowl(square):
    res = suggest(square, 1, goal="maximize:y")
    assert bowl(res.inputs).max() > 0.9 * bowl(np.array([[1.0, 0.0]]))[0]  # (1, 0) is the highest corner


# ----------------------------------------------------------------------------- exactness
def test_an_inequality_that_cuts_the_box_holds_at_every_point(square):
    res = suggest(square, 6, constraints=["a+b<=0.8"])
    assert np.all(res.inputs.sum(axis=1) <= 0.8 * (1 + 1e-12)), res.inputs
    assert np.all((res.inputs >= 0) & (res.inputs <= 1))


def test_an_equality_holds_to_rounding_at_every_point(square):
    res = suggest(square, 5, goal="minimize:y", constraints=["a*b=0.2"])
    prod = res.inputs[:, 0] * res.inputs[:, 1]
    assert np.all(np.abs(prod - 0.2) <= EQ_TOL * 1.2), prod - 0.2
    assert np.all((res.inputs >= 0) & (res.inputs <= 1))
    assert len({tuple(np.round(r, 6)) for r in res.inputs}) == 5


def test_fixed_inputs_are_exact_and_bounds_are_respected(square):
    res = suggest(square, 4, fixed={"a": 0.3125}, bounds={"b": (0.25, 0.5)})
    assert np.all(res.inputs[:, 0] == 0.3125)
    assert np.all((res.inputs[:, 1] >= 0.25) & (res.inputs[:, 1] <= 0.5)), res.inputs
    assert res.fixed == {"a": 0.3125} and res.bounds == {"b": (0.25, 0.5)}


def test_an_output_constraint_keeps_minimize_where_the_model_meets_it(square):
    res = suggest(square, 3, goal="minimize:y", constraints=["y>=0.5"])
    assert res.mean[:, 0].max() > 0.4  # the unconstrained minimum (0) is not proposed alone
    assert np.all(res.mean[:, 0] > 0.3), res.mean


# ----------------------------------------------------------------------------- the output file
@pytest.fixture(scope="module")
def campaign_run(tmp_path_factory) -> Surrogate:
    """Parameters c, a, d, b (file order); the model uses a and b; c is 1.5 everywhere, d
    varies; groups 10..29, the last one failed (its index still counts)."""
    n = 20
    rng = np.random.default_rng(0)
    x = np.empty((n, 4), np.float32)
    x[:, 0], x[:, 1], x[:, 2], x[:, 3] = 1.5, rng.uniform(0, 1, n), rng.uniform(2, 3, n), rng.uniform(0, 1, n)
    ok = np.ones(n, bool)
    ok[-1] = False
    y = bowl(x[:, [1, 3]].astype(np.float64))
    return make_surrogate(tmp_path_factory.mktemp("campaign"), ["c", "a", "d", "b"], x, ["a", "b"], y,
                          success=ok, start_index=10)


def test_the_file_lists_every_parameter_in_file_order_and_continues_param_idx(campaign_run, tmp_path):
    res = suggest(campaign_run, 3, fixed={"d": 2.25})
    assert res.columns == ["param_idx", "c", "a", "d", "b", "y", "y_std", "acquisition"]
    out = res.write(tmp_path / "next.csv")
    rows = list(csv.DictReader(out.open()))
    assert [int(r["param_idx"]) for r in rows] == [30, 31, 32]  # after param_29 (failed, still a group)
    assert [float(r["c"]) for r in rows] == [1.5] * 3 and [float(r["d"]) for r in rows] == [2.25] * 3
    assert np.array_equal(np.array([[float(r["a"]), float(r["b"])] for r in rows]), res.inputs)  # full precision
    mean, std = campaign_run.model.predict_std(torch.as_tensor(res.inputs))
    assert np.allclose([float(r["y"]) for r in rows], mean[:, 0].numpy(), rtol=1e-12)
    assert np.allclose([float(r["y_std"]) for r in rows], std[:, 0].numpy(), rtol=1e-12)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left

    data = json.loads(res.write(tmp_path / "next.json", "json").read_text())
    assert data["columns"] == res.columns and data["goal"] == "explore"
    assert [r["param_idx"] for r in data["rows"]] == [30, 31, 32]
    assert data["rows"][0]["a"] == float(rows[0]["a"])


def test_the_proposed_rows_read_back_as_a_rollout_campaign(campaign_run, tmp_path):
    """Closing the loop: the proposed rows, simulated, are one more file of the campaign."""
    from rollfit.data.reader import load_rollouts

    res = suggest(campaign_run, 2, fixed={"d": 2.5})
    names = res.parameter_names
    x = np.array([[row[n] for n in names] for row in res.rows], np.float32)
    new = write_rollout_file(tmp_path / "new.h5", x, {"y": bowl(res.inputs)}, param_names=names,
                             indices=[int(r["param_idx"]) for r in res.rows])
    old = run_file(campaign_run)
    table = load_rollouts([old, new], ["a", "b"], ["y"], cache=False)
    assert len(table) == 19 + 2 and sorted(set(table.param_idx.tolist())) == list(range(10, 29)) + [30, 31]


def run_file(sur: Surrogate) -> str:
    return sur.config["run_config"]["data"]["hdf5_path"]


def test_a_varying_parameter_the_model_does_not_use_needs_fixed(campaign_run):
    with pytest.raises(ConfigError) as exc:
        suggest(campaign_run, 2)
    assert str(exc.value) == ("d: expected one value in the training files for the parameters the model does not "
                              "use, but they vary there; pass --fixed d=VALUE (one per name)")
    camp = read_campaign(campaign_run)
    assert camp.constants == {"c": 1.5} and camp.varying == ["d"] and camp.max_param_idx == 29


def test_a_plot_of_the_proposals_is_written(square, tmp_path):
    from rollfit.analysis.suggest import write_plot

    res = suggest(square, 3)
    path = write_plot(square, res, tmp_path / "next.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, message", [
    (dict(goal="minimize:yy"), "goal minimize:yy: expected an output label, but got 'yy'; did you mean 'y'?"),
    (dict(goal="explor"), "goal: expected explore, minimize:LABEL or maximize:LABEL, but got 'explor'; "
                          "did you mean 'explore'?"),
    (dict(constraints=["a+b>=3"]), "constraints: expected a region of the search box where every constraint "
                                   "holds, but none of 4160 points sampled in it does; the closest misses 'a+b>=3' "
                                   "by 1"),
    (dict(constraints=["a+y<=1"]), "constraint 'a+y<=1': expected labels of inputs only or of outputs only, "
                                   "but got both (a, y)"),
    (dict(fixed={"aa": 1.0}), "fixed: expected an input label or a parameter name of the training files, but got "
                              "'aa'; did you mean 'a'?"),
    (dict(fixed={"a": 0.5, "b": 0.5}), "inputs: expected at least one input free to choose, but every input is "
                                       "fixed or solved for by an equality"),
])
def test_bad_requests_are_one_line_errors(square, kw, message):
    with pytest.raises(ConfigError) as exc:
        suggest(square, 2, **kw)
    assert str(exc.value) == message


@pytest.mark.parametrize("n", [0, -1, 10_001, 2.5, True])
def test_a_bad_number_of_points_is_refused(square, n):
    with pytest.raises(ConfigError, match=r"^n: expected a number of points from 1 to 10000, but got "):
        suggest(square, n)


def test_a_model_without_uncertainty_names_the_kinds_that_have_one(tmp_path):
    from rollfit.model.kinds import kinds_with
    from rollfit.model.network import RegressionNet

    net = RegressionNet(2, 1, [8], residual=False, activation="gelu", input_mean=torch.zeros(2),
                        input_std=torch.ones(2), target_mean=torch.zeros(1), target_std=torch.ones(1))
    x = np.random.default_rng(0).uniform(0, 1, (8, 2)).astype(np.float32)
    sur = make_surrogate(tmp_path, ["a", "b"], x, ["a", "b"], bowl(x.astype(np.float64)), model=net)
    with pytest.raises(ConfigError) as exc:
        suggest(sur, 2)
    assert str(exc.value) == (f"model kind 'mlp': expected a model with an uncertainty (suggest chooses points by "
                              f"it), but 'mlp' predicts a mean only; train one of {', '.join(kinds_with('has_std'))} "
                              "(model.kind)")


def test_goal_labels_are_checked_with_did_you_mean():
    assert parse_goal("maximize:cot", ["cot", "effort"]).label == "cot"
    with pytest.raises(ConfigError, match=r"did you mean 'effort'\?$"):
        parse_goal("minimize:efort", ["cot", "effort"])


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, demo_file) -> Path:
    """A short ensemble run on the demo file (inputs gait_cadence, gait_stride; 11 constant parameters)."""
    from rollfit.config import load_config
    from rollfit.pipeline.run import train

    cfg = load_config(None, ["model.kind=ensemble", "model.members=4", "trainer.max_epochs=60", "trainer.lr=0.01",
                             "trainer.save_period=60", "trainer.progress=false", "trainer.report=false",
                             "data.train_split=1.0", "data.cache=false"])
    cfg.data.hdf5_path = str(demo_file)
    return train(cfg, tmp_path_factory.mktemp("runs") / "ensemble").run_dir


@pytest.mark.parametrize("goal", ["explore", "minimize:cot_ma15"])
def test_an_ensembles_suggestions_do_not_depend_on_torchs_global_generator(ensemble_run, goal):
    sur = Surrogate.load(ensemble_run)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(sur.suggest(3, goal=goal, seed=4).inputs)
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.slow
def test_the_command_writes_a_file_the_simulator_can_run(ensemble_run, tmp_path, capsys):
    from rollfit.cli.main import main
    from rollfit.data.synthetic import DEFAULT_13_NAMES

    out, png = tmp_path / "next.csv", tmp_path / "next.png"
    assert main(["suggest", "--run", str(ensemble_run), "--n", "3", "--output", str(out), "--plot", str(png),
                 "--constraint", "gait_stride<=gait_cadence"]) == 0
    printed = capsys.readouterr().out
    assert "3 points for goal explore (qPosteriorStandardDeviation):" in printed and f"wrote {out}" in printed
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["param_idx", *DEFAULT_13_NAMES, "cot_ma15", "cot_ma15_std", "acquisition"]
    assert [int(r["param_idx"]) for r in rows] == [300, 301, 302]  # the demo file has groups 0..299
    assert all(float(r["gait_stride"]) <= float(r["gait_cadence"]) for r in rows)
    assert all(float(r[n]) == 1.0 for r in rows for n in DEFAULT_13_NAMES[2:])  # the campaign's fixed values
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_command_refuses_a_run_without_uncertainty(trained_run, tmp_path, capsys):
    from rollfit.cli.main import main

    assert main(["suggest", "--run", str(trained_run), "--n", "3", "--output", str(tmp_path / "n.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rollfit suggest: error: model kind 'mlp': expected a model with an uncertainty") \
        and err.count("\n") == 1
    assert not (tmp_path / "n.csv").exists()


def test_an_unknown_goal_label_is_one_line_before_the_model_is_used(square, tmp_path):
    with pytest.raises(ConfigError, match=r"^goal maximize:z: expected an output label, but got 'z'; outputs: "):
        suggest(square, 2, goal="maximize:z")


@pytest.mark.parametrize("extra, message", [
    (["--output", "/proc/rollfit-none/next.csv"], "/proc/rollfit-none: could not write (No such file or directory)"),
    (["--output", "{tmp}"], "{tmp}: expected a file to write, but it is a folder"),
    (["--output", "n.csv", "--fixed", "a=x"], "--fix a: expected a number, but got 'x'"),
    (["--output", "n.csv", "--bounds", "a=1"], "--bounds a: expected LO:HI, but got '1'"),
])
def test_bad_outputs_and_values_are_refused_before_the_model_loads(tmp_path, capsys, extra, message):
    """A placeholder checkpoint: these answer before anything is loaded."""
    from rollfit.cli.main import main

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ep_000001.ckpt").write_bytes(b"placeholder")
    argv = ["suggest", "--run", str(run), "--n", "2", *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"rollfit suggest: error: {message.replace('{tmp}', str(tmp_path))}\n"
