"""The Gaussian-process kinds (gp, robust_gp): fit, std, save/load, outliers, row limit, export, CLI.

Known truths: sin on [0, 1] (noise-free), a 2-D surface with noise std 0.1 (coverage of the
95% interval of a new observation), planted gross outliers (robust_gp must flag them).
Fits use one or two starts (``FAST``) to keep each test short.
"""
import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch

from rollfit.errors import CheckpointError, ConfigError
from rollfit.model import gp as G
from rollfit.model.kinds import kind_spec, kinds_exporting, kinds_with

FAST = dataclasses.replace(G.DEFAULT_SETTINGS, restarts=2, maxiter=200)
DT = torch.float64


def _sin_data(n=25):
    x = torch.linspace(0.0, 1.0, n, dtype=DT)[:, None]
    return x, torch.sin(6.0 * x)


def _surface(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.sin(3.0 * x[:, 0]) + x[:, 1] ** 2, x[:, 0] * x[:, 1]], dim=-1)


def _noisy_2d(n=80, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=DT) * 2.0 - 1.0
    return x, _surface(x) + noise * torch.randn(n, 2, generator=g, dtype=DT)


@pytest.fixture(scope="module")
def sin_gp():
    x, y = _sin_data()
    model = G.GPSurrogate(x, y, settings=FAST)
    model.fit()
    return model


@pytest.fixture(scope="module")
def two_output_gp():
    x, y = _noisy_2d()
    model = G.GPSurrogate(x, y, settings=FAST)
    model.fit()
    return model


def test_kinds_are_registered_with_std_and_exports():
    assert {"gp", "robust_gp"} <= set(kinds_with("has_std"))
    assert "gp" not in kinds_with("resumable") and "robust_gp" not in kinds_with("resumable")
    for fmt in ("onnx", "pt2", "c"):
        assert {"gp", "robust_gp"} <= set(kinds_exporting(fmt))


def test_fits_a_noise_free_function_accurately(sin_gp):
    xt = torch.linspace(0.0, 1.0, 201, dtype=DT)[:, None]
    err = (sin_gp.predict(xt) - torch.sin(6.0 * xt)).abs().max()
    assert err < 2e-3, err
    assert sin_gp.kind == "gp" and sin_gp.input_dim == 1 and sin_gp.output_dim == 1


def test_std_grows_away_from_the_data(sin_gp):
    _, std = sin_gp.predict_std(torch.tensor([[0.5], [1.5], [-1.0]], dtype=DT))
    near, far, farther = std[:, 0].tolist()
    assert far > 20 * near and farther > far


def test_interval_coverage_of_new_observations_is_sane(two_output_gp):
    g = torch.Generator().manual_seed(5)
    xt = torch.rand(1000, 2, generator=g, dtype=DT) * 2.0 - 1.0
    y_new = _surface(xt) + 0.1 * torch.randn(1000, 2, generator=g, dtype=DT)
    mean, std = two_output_gp.predict_std(xt)
    covered = ((y_new - mean).abs() <= 1.96 * std).double().mean(0)
    assert ((covered > 0.88) & (covered < 0.995)).all(), covered
    rmse = (mean - _surface(xt)).square().mean(0).sqrt()
    assert (rmse < 0.1).all(), rmse  # the noise std is 0.1


def test_leave_one_out_residuals_equal_refits_without_the_row(two_output_gp):
    """The closed form against its definition: the GP with the same hyperparameters
    conditioned on every row but one, predicting that row (mean and observation std)."""
    import copy

    gp = two_output_gp.gps[0]
    z = G.loo_residuals(gp)
    gp.eval()
    x, y = gp.train_inputs[0], gp.train_targets  # BoTorch keeps transformed rows in eval mode
    for i in (0, 17, 79):
        keep = torch.arange(len(y)) != i
        held = copy.deepcopy(gp)
        held.set_train_data(x[keep], y[keep], strict=False)
        with torch.no_grad():
            post = held(x[i:i + 1])
        expected = (y[i] - post.mean) / (post.variance + gp.likelihood.noise).sqrt()
        torch.testing.assert_close(z[i:i + 1], expected, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(G.loo_errors(gp)[i:i + 1], y[i] - post.mean, rtol=1e-6, atol=1e-8)


def test_the_leave_one_out_rule_prefers_the_fitted_hyperparameters_to_far_too_short_scales(sin_gp):
    """Known answer: length scales 100x shorter than the fit's predict every left-out row of
    a smooth curve from almost nothing, so their leave-one-out error is larger; a model is not
    better than itself (ties keep the first)."""
    import copy

    fitted = sin_gp.gps[0]
    short = copy.deepcopy(fitted)
    short.covar_module.base_kernel.lengthscale = fitted.covar_module.base_kernel.lengthscale / 100.0
    assert G.twin_is_better(short, fitted) and not G.twin_is_better(fitted, short)
    assert not G.twin_is_better(fitted, copy.deepcopy(fitted))


@pytest.mark.parametrize("twin_wins", [True, False])
def test_select_prior_adopts_the_twin_only_when_it_wins(monkeypatch, twin_wins):
    """``select_prior`` fits the dim-scaled twin (one start) and, when the leave-one-out rule
    says so, the model takes its hyperparameters: it then predicts as the twin fitted alone
    and survives a checkpoint round trip; otherwise it is left as it was."""
    x, y = _sin_data(15)
    settings = dataclasses.replace(FAST, prior="none")
    model = G.GPSurrogate(x, y, settings=settings)
    model.fit()
    twin = G.GPSurrogate(x, y, settings=G.twin_settings(FAST))
    twin.fit()
    xt = torch.linspace(-0.2, 1.2, 40, dtype=DT)[:, None]
    before = model.predict(xt)
    monkeypatch.setattr(G, "twin_is_better", lambda mine, theirs: twin_wins)
    value = G.select_prior(model.gps[0], model.train_x, model.train_y, settings)
    assert (value is not None) == twin_wins
    expected = twin.predict(xt) if twin_wins else before
    torch.testing.assert_close(model.predict(xt), expected, rtol=0, atol=1e-10)
    assert not torch.allclose(twin.predict(xt), before, atol=1e-6)  # the two fits differ: the check can fail
    torch.testing.assert_close(_reload(model).predict(xt), model.predict(xt), rtol=0, atol=1e-12)


def test_select_fits_a_twin_per_output_only_up_to_its_row_limit(monkeypatch):
    calls = []
    monkeypatch.setattr(G, "select_prior", lambda gp, x, y, settings, output: calls.append((len(x), output)))
    x, y = _noisy_2d(n=30)
    G.GPSurrogate(x, y, settings=FAST).fit()
    assert calls == [(30, 0), (30, 1)]
    for settings in (dataclasses.replace(FAST, select_max_rows=29), dataclasses.replace(FAST, prior="none")):
        calls.clear()
        G.GPSurrogate(x, y, settings=settings).fit()
        assert calls == []
    assert G.selects_prior(FAST, 30, robust=True) and not G.selects_prior(
        dataclasses.replace(FAST, robust_prior="dim_scaled"), 30, robust=True)


def test_calibration_narrows_the_too_wide_intervals_of_a_smooth_function():
    """A noise-free smooth surface: maximum likelihood's std is far too wide (every held-out
    point inside the 95% interval); the calibrated one covers about 95%, the mean unchanged."""
    def truth(x):
        return (torch.sin(2.0 * x[:, 0]) + torch.cos(3.0 * x[:, 1]) + 0.5 * x[:, 0] * x[:, 1])[:, None]

    g = torch.Generator().manual_seed(3)
    x = torch.rand(60, 2, generator=g, dtype=DT) * 2.0 - 1.0
    xt = torch.rand(2000, 2, generator=g, dtype=DT) * 2.0 - 1.0
    fits = {}
    for level in (None, 0.95):
        model = G.GPSurrogate(x, truth(x), settings=dataclasses.replace(FAST, calibration=level))
        model.fit()
        fits[level] = model
    covered = {k: float(((truth(xt) - m.predict_std(xt)[0]).abs() <= 1.96 * m.predict_std(xt)[1]).double().mean())
               for k, m in fits.items()}
    assert covered[None] > 0.995 and 0.88 <= covered[0.95] <= 0.99, covered
    assert float(fits[0.95].std_scale) < 0.7 and float(fits[None].std_scale) == 1.0
    torch.testing.assert_close(fits[0.95].predict(xt), fits[None].predict(xt), rtol=0, atol=1e-12)
    assert float(_reload(fits[0.95]).std_scale) == float(fits[0.95].std_scale)


def test_a_checkpoint_from_before_calibration_loads_with_its_old_std(two_output_gp):
    state = {k: v for k, v in two_output_gp.state_dict().items() if k != "std_scale"}
    again = kind_spec("gp").build(two_output_gp.constructor_args())
    again.load_state_dict(state, strict=True)
    assert again.std_scale.tolist() == [1.0, 1.0]


def test_forward_is_differentiable_and_matches_finite_differences(two_output_gp):
    x = torch.tensor([[0.2, -0.3], [-0.6, 0.5]], dtype=DT, requires_grad=True)
    two_output_gp(x)[:, 0].sum().backward()
    h = 1e-6
    fd = torch.stack([(two_output_gp.predict(x.detach() + h * e) - two_output_gp.predict(x.detach() - h * e))[:, 0] / (2 * h)
                      for e in torch.eye(2, dtype=DT)], dim=-1)
    torch.testing.assert_close(x.grad, fd, rtol=1e-5, atol=1e-6)
    mean, std = two_output_gp.predict_std(x)
    assert std.requires_grad and mean.requires_grad  # optimize's mean + k*std runs autograd through both


def test_predict_std_mean_equals_forward_and_float32_inputs_work(two_output_gp):
    x = torch.tensor([[0.1, 0.2], [0.9, -0.9]], dtype=torch.float32)
    mean, _ = two_output_gp.predict_std(x)
    torch.testing.assert_close(mean, two_output_gp.predict(x))
    assert two_output_gp.predict(x).dtype == DT


def _reload(model):
    """The model as ``runs.checkpoint`` rebuilds it: kind's build(config) + strict load."""
    buf = io.BytesIO()
    torch.save({"config": model.constructor_args(), "state": model.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    rebuilt = kind_spec(saved["config"]["kind"]).build(saved["config"])
    rebuilt.load_state_dict(saved["state"], strict=True)
    return rebuilt


def test_save_load_round_trip_gives_equal_predictions(two_output_gp):
    again = _reload(two_output_gp)
    x = torch.rand(50, 2, dtype=DT) * 3.0 - 1.5
    torch.testing.assert_close(again.predict(x), two_output_gp.predict(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(again.predict_std(x)[1], two_output_gp.predict_std(x)[1], rtol=0, atol=1e-12)
    cfg = two_output_gp.constructor_args()
    assert cfg["layers"] == [] and cfg["residual"] is False and cfg["target_convention"] == "raw"
    assert cfg["n_train"] == 80 and len(cfg["input_mean"]) == 2 and len(cfg["target_std"]) == 2


def test_multi_output_is_one_independent_gp_per_output(two_output_gp):
    from botorch.models import ModelListGP

    model = two_output_gp.botorch_model()
    assert isinstance(model, ModelListGP) and len(model.models) == 2
    x = torch.tensor([[0.3, 0.4]], dtype=DT)
    post = model.posterior(x)
    torch.testing.assert_close(post.mean, two_output_gp.predict(x))
    # the first output alone, fitted by itself, predicts the same (independent GPs)
    x_train, y_train = two_output_gp.train_x, two_output_gp.train_y
    alone = G.GPSurrogate(x_train, y_train[:, :1], settings=FAST)
    alone.fit()
    torch.testing.assert_close(alone.predict(x)[:, 0], two_output_gp.predict(x)[:, 0], rtol=1e-4, atol=1e-4)


def test_export_module_equals_forward_without_gpytorch(two_output_gp, sin_gp):
    for model, d in ((two_output_gp, 2), (sin_gp, 1)):
        mean = model.export_module()
        assert not any("gpytorch" in type(m).__module__ or "botorch" in type(m).__module__ for m in mean.modules())
        x = torch.rand(64, d, dtype=DT) * 2.5 - 1.25
        torch.testing.assert_close(mean(x), model.predict(x), rtol=1e-7, atol=1e-8)
        torch.testing.assert_close(mean(model.train_x[:3]), model.predict(model.train_x[:3]), rtol=1e-7, atol=1e-8)
        # float32 inputs (ONNX's interface): float32 out, summed in float64 inside
        assert mean.alpha.dtype == DT and mean(x.float()).dtype == torch.float32
        torch.testing.assert_close(mean(x.float()).double(), model.predict(x.float().double()), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_robust_gp_flags_planted_outliers():
    x, y = _noisy_2d(n=50, seed=3, noise=0.05)
    y = y[:, :1].clone()
    planted = [7, 23, 41]
    y[planted] += 4.0
    robust = G.GPSurrogate(x, y, robust=True, settings=FAST)
    robust.fit()
    flagged = {row for row, _ in robust.outliers()}
    assert set(planted) <= flagged and len(flagged) <= 6, flagged
    plain = G.GPSurrogate(x, y, settings=FAST)
    plain.fit()
    xt = torch.rand(400, 2, dtype=DT) * 2.0 - 1.0
    truth = _surface(xt)[:, :1]
    rmse = lambda m: float((m.predict(xt) - truth).square().mean().sqrt())
    assert rmse(robust) < 0.5 * rmse(plain)
    again = _reload(robust)  # the outlier support comes back with the checkpoint
    assert again.outliers() == robust.outliers()
    torch.testing.assert_close(again.predict_std(xt)[1], robust.predict_std(xt)[1], rtol=0, atol=1e-10)


def test_robust_starts_are_counted_and_ranked_by_their_evidence_and_support_prior():
    assert G.starts(G.DEFAULT_SETTINGS, 100, robust=True) == 5 and G.starts(G.DEFAULT_SETTINGS, 400, robust=True) == 2
    assert G.starts(dataclasses.replace(G.DEFAULT_SETTINGS, robust_restarts=1), 100, robust=True) == 1
    x, y = _noisy_2d(n=24, seed=5, noise=0.05)
    y = y[:, :1].clone()
    y[[4, 17]] += 4.0
    scores = []
    for restarts in (1, 3):
        model = G.GPSurrogate(x, y, robust=True, settings=dataclasses.replace(FAST, restarts=3, robust_restarts=restarts))
        model.fit()
        gp = model.gps[0]
        n_flagged = len(gp.likelihood.noise_covar.support)
        assert G._support_log_prior(gp) == pytest.approx(-n_flagged / 4.0 - math.log(4.0))  # mean int(0.2 * 24)
        score, per_row = G._start_score(gp, robust=True)
        assert score == pytest.approx(per_row * 24 + G._support_log_prior(gp)) and per_row == G._mll_value(gp)
        scores.append(score)
        assert {4, 17} <= {row for row, _ in model.outliers()}
    assert scores[1] >= scores[0] - 1e-9  # the best of three starts, the first among them


def test_row_limit_error_names_the_key_and_the_ensemble_kind():
    from rollfit.training.gp_fit import check_rows

    check_rows("gp", 10, 10)
    with pytest.raises(ConfigError) as err:
        check_rows("robust_gp", 11, 10)
    assert str(err.value) == ("model.gp_max_rows: expected at most 10 training rows for model.kind 'robust_gp' "
                              "(an exact GP needs rows^2 memory and rows^3 time), but got 11; use "
                              "model.kind=ensemble, or raise model.gp_max_rows")


def test_a_crafted_row_count_is_refused_before_allocating():
    cfg = {"kind": "gp", "input_dim": 2, "output_dim": 1, "n_train": 1 << 40}
    with pytest.raises(CheckpointError, match=r"^config.n_train: expected the GP's training row count"):
        G.build_from_config(cfg)
    with pytest.raises(CheckpointError, match=r"^config.outlier_support: expected 1 list"):
        G.build_from_config({**cfg, "n_train": 5, "outlier_support": [[9]]})


# ----------------------------------------------------------------------------- end to end
CLI = ["model.kind=gp", "trainer.progress=false", "trainer.report=false", "data.train_split=0.8", "data.cache=false"]


@pytest.fixture
def fast_fits(monkeypatch):
    monkeypatch.setattr(G, "DEFAULT_SETTINGS", dataclasses.replace(FAST, restarts=1))


def _config_file(tmp_path, demo_file):
    path = tmp_path / "gp.yaml"
    path.write_text(f"data:\n  hdf5_path: {demo_file}\n  in_lbl: [gait_stride, gait_cadence]\n  out_lbl: [cot_ma15]\n")
    return path


def test_cli_train_gp_end_to_end(tmp_path, demo_file, fast_fits):
    from rollfit.analysis.surrogate import Surrogate
    from rollfit.cli.main import main

    out = tmp_path / "run"
    assert main(["train", "--config", str(_config_file(tmp_path, demo_file)), "--output", str(out), *CLI]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt"]
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    cfg = ckpt["config"]
    assert cfg["kind"] == "gp" and cfg["outliers"] == [] and cfg["activation"] == "gelu" and cfg["layers"] == []
    assert cfg["gp_fit"]["starts"] == 1 and len(cfg["gp_fit"]["mll_per_row"]) == 1
    assert cfg["in_lbl"] == ["gait_stride", "gait_cadence"] and cfg["n_train"] == cfg["data_summary"]["train_rows"]
    log = next(p for p in (out / "logs").iterdir() if not p.name.endswith("_hparams.json"))
    rows = json.loads(log.read_text())
    assert len(rows) == 1 and rows[0]["step"] == 0 and {"loss/train", "loss/val", "rmse/cot_ma15"} <= set(rows[0])
    s = Surrogate.load(out)
    mean, std = s.predict(np.array([[1.05, 0.95], [0.8, 1.2]]), return_std=True)
    assert mean.shape == std.shape == (2, 1) and (std > 0).all()
    assert abs(mean[0, 0] - 55.0) < 1.5  # the demo bowl's minimum (noise std 1, ~240 rows)


def test_cli_row_limit_is_a_one_line_error_and_leaves_no_run(tmp_path, demo_file, capsys):
    from rollfit.cli.main import main

    out = tmp_path / "run"
    code = main(["train", "--config", str(_config_file(tmp_path, demo_file)), "--output", str(out), *CLI,
                 "model.gp_max_rows=10"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "model.gp_max_rows: expected at most 10 training rows for model.kind 'gp'" in err and "ensemble" in err
    assert not out.exists()


def test_an_interrupted_fit_leaves_no_checkpoint(tmp_path, demo_file, monkeypatch):
    from rollfit.config import load_config
    from rollfit.pipeline.run import train

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(G.GPSurrogate, "fit", interrupted)
    cfg = load_config(_config_file(tmp_path, demo_file), CLI)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    assert not ckpts.exists() or not any(ckpts.iterdir())



def test_c_header_of_the_gp_mean_compiles_and_matches_forward(two_output_gp, tmp_path):
    import shutil
    from pathlib import Path

    from rollfit.export import c_gp
    from rollfit.export.c_header import compile_driver, run_driver
    from rollfit.export.c_safety import audit_header, check_definitions
    from rollfit.export.common import ExportInfo

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    info = ExportInfo(name="gpm", in_lbl=["a", 'b "quoted"'], out_lbl=["y1", "y2"], lo=np.array([-1.0, -1.0]),
                      hi=np.array([1.0, 1.0]), bounds_estimated=False, layers=[], residual=False, activation="gelu",
                      target_convention="raw", checkpoint=Path("best.ckpt"), checkpoint_sha256="0" * 64,
                      original_pipeline=False, kind="gp")
    text = c_gp.render_gp(two_output_gp, info)
    assert text == c_gp.render_gp(two_output_gp.export_module(), info)
    audit_header(text, "gpm")
    header = tmp_path / "gpm.h"
    header.write_text(text)
    check_definitions(cc, header, c_gp.own_functions("gpm"), c_gp.own_arrays("gpm"))
    x = (torch.rand(40, 2, dtype=DT) * 2.4 - 1.2).float().double()
    y = run_driver(compile_driver(header, info, tmp_path, cc), x.numpy())
    np.testing.assert_allclose(y, two_output_gp.predict(x).numpy(), rtol=2e-6, atol=2e-6)


def test_flagged_rows_are_recorded_with_their_param_idx_and_output():
    from types import SimpleNamespace

    from rollfit.training.gp_fit import GPFitter

    fitter = GPFitter.__new__(GPFitter)
    fitter.ctx = SimpleNamespace(data=SimpleNamespace(train=SimpleNamespace(rows=np.array([0, 2, 5, 7]))),
                                 cfg=SimpleNamespace(data=SimpleNamespace(out_lbl=["cot", "speed"])),
                                 table=SimpleNamespace(param_idx=np.array([10, 11, 12, 13, 14, 15, 16, 17])))
    model = SimpleNamespace(outliers=lambda: [(1, 0), (3, 1)])
    assert fitter.outliers(model) == [{"row": 1, "param_idx": 12, "output": "cot"},
                                      {"row": 3, "param_idx": 17, "output": "speed"}]


def test_a_fit_where_every_start_fails_is_a_one_line_error(monkeypatch):
    from botorch.exceptions.errors import ModelFittingError

    from rollfit.errors import TrainingError

    def failing(*args, **kwargs):
        raise ModelFittingError("All attempts to fit the model have failed.")

    monkeypatch.setattr("botorch.fit.fit_gpytorch_mll", failing)
    x, y = _sin_data(8)
    with pytest.raises(TrainingError) as err:
        G.GPSurrogate(x, y, settings=FAST).fit()
    assert str(err.value).startswith("gp fit: expected a finite marginal likelihood from at least one start, but "
                                     "every start failed (last: ModelFittingError: All attempts")


def test_the_report_lists_the_rows_a_robust_gp_flagged():
    from rollfit.analysis.report import outliers_section

    flagged = [{"row": 1, "param_idx": 12, "output": "cot"}, {"row": 3, "param_idx": 17, "output": "cot"}]
    html = "".join(outliers_section(flagged, "robust_gp"))
    assert "flagged 2 training row(s) as gross outliers" in html
    assert '<td class="num">12</td><td>cot</td><td class="num">1</td>' in html and '<td class="num">17</td>' in html
    assert "flagged no training row" in "".join(outliers_section([], "robust_gp"))
    assert outliers_section([], "gp") == [] and outliers_section(None, "robust_gp") == []


def test_train_prints_the_flagged_groups_and_autos_choice(monkeypatch):
    import rollfit.runs.checkpoint as ckpt_io
    from rollfit.cli.train import model_lines

    cfg = {"kind": "robust_gp", "auto": {"folds": 5, "chosen": "robust_gp"},
           "outliers": [{"row": 1, "param_idx": 12, "output": "a"}, {"row": 1, "param_idx": 12, "output": "b"},
                        {"row": 4, "param_idx": 3, "output": "a"}]}
    monkeypatch.setattr(ckpt_io, "load_checkpoint", lambda path: {"config": cfg})
    assert model_lines("best.ckpt") == [
        "auto chose robust_gp by 5-fold cross-validation (table: metrics_auto_cv.json, report.html)",
        "outliers flagged by robust_gp: 2 group(s): param_idx 3, 12"]
    cfg = {"kind": "gp", "outliers": []}
    assert model_lines("best.ckpt") == []


def test_cross_validation_of_a_gp_scores_its_intervals(tmp_path, demo_file, fast_fits, capsys):
    """``evaluate --cv`` of a kind with an uncertainty: nll and coverage_95 per fold and
    pooled, equal to a computation from the out-of-fold means and stds."""
    from rollfit.analysis.evaluate import uncertainty_metrics
    from rollfit.cli.main import main
    from rollfit.pipeline.cv import cross_validate

    out = tmp_path / "run"
    assert main(["train", "--config", str(_config_file(tmp_path, demo_file)), "--output", str(out), *CLI]) == 0
    cv = cross_validate(out, 3, workers=1, progress=False)
    assert cv.y_std is not None and np.isfinite(cv.y_std).all() and (cv.y_std > 0).all()
    want = uncertainty_metrics(cv.y_true, cv.y_pred, cv.y_std, ["cot_ma15"])["cot_ma15"]
    pooled = cv.pooled()["cot_ma15"]
    assert pooled["nll"] == pytest.approx(want["nll"]) and pooled["coverage_95"] == want["coverage_95"]
    fold0 = uncertainty_metrics(cv.y_true[cv.fold == 0], cv.y_pred[cv.fold == 0], cv.y_std[cv.fold == 0], ["cot_ma15"])
    assert cv.fold_metrics[0]["cot_ma15"]["coverage_95"] == fold0["cot_ma15"]["coverage_95"]
    assert 0.8 <= pooled["coverage_95"] <= 1.0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--cv", "2", "--concurrent", "1"]) == 0
    printed = capsys.readouterr().out
    assert "coverage_95" in printed and "nll" in printed
    saved = json.loads((out / "metrics_cv.json").read_text())
    assert len(saved["per_output"]["cot_ma15"]["coverage_95"]["folds"]) == 2
    assert "nll" in saved["pooled"]["cot_ma15"]


@pytest.mark.parametrize("scale, message", [
    (torch.ones(3, dtype=DT), "expected weights of model.kind gp, but got shape mismatch (checkpoint vs network) "
                              "'std_scale (3,) vs (2,)'"),
    (torch.tensor([1.0, float("nan")], dtype=DT), "std_scale: expected 2 positive finite factor(s), but got [1.0, nan]"),
    (torch.tensor([0.5, -2.0], dtype=DT), "std_scale: expected 2 positive finite factor(s), but got [0.5, -2.0]"),
])
def test_a_crafted_std_scale_is_a_one_line_error_naming_the_file(two_output_gp, scale, message):
    from rollfit.runs.checkpoint import load_weights

    state = {**two_output_gp.state_dict(), "std_scale": scale}
    again = kind_spec("gp").build(two_output_gp.constructor_args())
    with pytest.raises(CheckpointError) as err:
        load_weights(again, state, "run/checkpoints/best.ckpt")
    assert str(err.value) == f"run/checkpoints/best.ckpt: {message}"
