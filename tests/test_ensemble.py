"""The ``ensemble`` kind: K networks as one batched network, trained by the same step engine.

The fused step's ensemble gradients are checked against autograd (the reference engine's loss)
and finite differences; each member must get exactly the gradient it would get alone (the
loss is the sum of the members' losses); training through the Trainer must follow the
reference engine; the std's calibration must recover a known scale and noise; a run must
load back (Surrogate) with the same predictions and resume bit for bit.
"""
from __future__ import annotations

import shutil
import tempfile

import numpy as np
import pytest
import torch
from conftest import demo_config

from rollfit.config import TrainerConfig, load_config
from rollfit.data.datamodule import HDF5DataModule
from rollfit.data.reader import load_rollouts
from rollfit.model.ensemble import EnsembleNet, fit_calibration
from rollfit.model.kinds import kind_spec, kinds_with
from rollfit.model.network import RegressionNet
from rollfit.model.registry import LOSSES
from rollfit.pipeline.models import new_model
from rollfit.pipeline.run import resume, train
from rollfit.runs.checkpoint import checkpoint_name, load_checkpoint, load_model, training_model
from rollfit.training.fastpath import FlatParams, MLPStepMath
from rollfit.training.step import FusedEngine, MemberRows, ReferenceEngine
from rollfit.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

K = 3


def _ensemble(residual, act, layers, out=1, d=3, members=K, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    net = EnsembleNet(d, out, layers, members=members, input_mean=torch.randn(d), input_std=torch.rand(d) + 0.5,
                      residual=residual, activation=act, **kw).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # no zero biases: keep away from |w|'s kink
    return net


def _cfg(kind="huber", space="normalized"):
    return TrainerConfig(recon_type=kind, recon_weight=3.0, recon_delta=0.7, l1_weight=0.01, l2_weight=0.02,
                         grad_weight=0.37, grad_space=space)


def _fused(net, cfg, x, yn, kind):
    fp = FlatParams(net)
    math = MLPStepMath(net, fp, cfg)
    total, parts = math.backward(math.forward(math.normalize(x)), yn, LOSSES[kind])
    return torch.cat([total.reshape(1), parts]), fp


CASES = [  # residual, activation, layers, outputs, loss, penalty space
    (True, "gelu", [64, 32], 1, "huber", "normalized"),   # the seed's (last block merged with its skip)
    (True, "silu", [8, 8, 5], 2, "cauchy", "raw"),         # identity skip, then a Linear skip
    (False, "gelu", [8, 6, 4], 2, "geman", "raw"),         # sequential, tanh after the last hidden layer
    (True, "tanh", [6, 6], 3, "tukey", "normalized"),
]


@pytest.mark.parametrize("per_member", [False, True], ids=["shared-rows", "per-member-rows"])
@pytest.mark.parametrize("residual,act,layers,out,kind,space", CASES)
def test_fused_ensemble_step_equals_autograd(residual, act, layers, out, kind, space, per_member):
    """Losses (members' means) and the gradient of the members' summed loss, vs autograd's
    double backward through ``EnsembleNet.forward_normalized`` (the reference engine's loss)."""
    net, cfg = _ensemble(residual, act, layers, out), _cfg(kind, space)
    x = torch.randn(*((K,) if per_member else ()), 17, 3, dtype=torch.float64) * 2 + 0.5
    yn = torch.randn(17, out, dtype=torch.float64)
    ref = ReferenceEngine(net, cfg, None, x, yn)
    total, parts = ref.loss(x, yn, 0)
    grads = torch.autograd.grad(total * K, list(net.parameters()))
    got, fp = _fused(net, cfg, x, yn, kind)
    torch.testing.assert_close(got, torch.cat([total.reshape(1), parts]).detach(), rtol=1e-10, atol=1e-12)
    for g, r in zip(fp.grad_views, grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def _member(net: EnsembleNet, j: int) -> RegressionNet:
    """Member j of an ensemble as a RegressionNet with the same weights."""
    one = RegressionNet(net.input_dim, net.output_dim, net.layers, input_mean=net.input_mean, input_std=net.input_std,
                        residual=net.residual, activation=net.activation).to(net.input_mean.dtype)
    with torch.no_grad():
        one.input_mean.copy_(net.input_mean)
        one.input_std.copy_(net.input_std)
    one.load_state_dict({k: (v[j] if k.startswith("mlp.") else v) for k, v in net.state_dict().items()
                         if k not in ("std_scale", "noise_std")})
    return one


@pytest.mark.parametrize("residual,act,layers,out,kind,space", [CASES[0], CASES[2]])
def test_each_member_gets_the_gradient_it_would_get_alone(residual, act, layers, out, kind, space):
    net, cfg = _ensemble(residual, act, layers, out), _cfg(kind, space)
    x, yn = torch.randn(13, 3, dtype=torch.float64), torch.randn(13, out, dtype=torch.float64)
    got, fp = _fused(net, cfg, x, yn, kind)
    alone = []
    for j in range(K):
        single, fp1 = _fused(_member(net, j), cfg, x, yn, kind)
        alone.append(single)
        for g_all, g_one in zip(fp.grad_views, fp1.grad_views):
            torch.testing.assert_close(g_all[j], g_one, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(got, torch.stack(alone).mean(0), rtol=1e-10, atol=1e-13)  # reported: the mean


@pytest.mark.parametrize("residual,act,layers,out,kind,space", [CASES[0], CASES[1], CASES[2]])
def test_fused_ensemble_gradient_matches_finite_differences(residual, act, layers, out, kind, space):
    net, cfg = _ensemble(residual, act, layers, out, seed=1), _cfg(kind, space)
    x, yn = torch.randn(11, 3, dtype=torch.float64), torch.randn(11, out, dtype=torch.float64)
    fp = FlatParams(net)
    math = MLPStepMath(net, fp, cfg)
    xn = math.normalize(x)

    def summed() -> float:  # the members' summed total: what the gradient is of
        return math.backward(math.forward(xn), yn, LOSSES[kind])[0].item() * K

    summed()
    grad = fp.grad.clone()
    eps = 1e-6
    for i in torch.randperm(fp.flat.numel(), generator=torch.Generator().manual_seed(0))[:25].tolist():
        old = fp.flat[i].item()
        fp.flat[i] = old + eps
        up = summed()
        fp.flat[i] = old - eps
        down = summed()
        fp.flat[i] = old
        assert (up - down) / (2 * eps) == pytest.approx(grad[i].item(), rel=1e-5, abs=1e-8)


def test_members_start_different_and_outputs_have_the_documented_shapes():
    torch.manual_seed(0)
    net = EnsembleNet(2, 3, [8, 4], members=4)
    w = net.mlp.input_layer.weight
    assert w.shape == (4, 8, 2) and not torch.equal(w[0], w[1])
    x = torch.randn(5, 2)
    ys = net.members_forward(x)
    assert ys.shape == (4, 5, 3)
    torch.testing.assert_close(net(x), ys.mean(0))
    mean, std = net.predict_std(x)
    torch.testing.assert_close(mean, ys.mean(0))
    torch.testing.assert_close(std, ys.std(0))  # uncalibrated: scale 1, no noise
    assert kind_spec("ensemble").has_std and "ensemble" in kinds_with("resumable")


def test_predict_std_is_differentiable_in_the_inputs():
    net = _ensemble(True, "gelu", [6, 6], out=2, d=2, seed=3)
    with torch.no_grad():
        net.std_scale.fill_(1.7)
        net.noise_std.fill_(0.2)
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: torch.cat(net.predict_std(v), 1), (x,))
    assert torch.autograd.gradcheck(lambda v: net(v), (x,))


def test_calibration_recovers_a_known_scale_and_noise():
    """Residuals drawn with variance (2 * spread)^2 + 0.5^2: the fit finds scale 2 and noise 0.5."""
    gen = torch.Generator().manual_seed(0)
    n, k = 20000, 8
    spread = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 2 + 0.1
    members = torch.randn(k, n, 1, generator=gen, dtype=torch.float64)
    members = (members - members.mean(0)) / members.std(0) * spread  # spread exactly as drawn
    truth = torch.randn(n, 1, generator=gen, dtype=torch.float64) * ((2 * spread) ** 2 + 0.25).sqrt()
    scale, noise, rows = fit_calibration(members, truth)
    assert rows == n
    assert scale.item() == pytest.approx(2.0, rel=0.08) and noise.item() == pytest.approx(0.5, rel=0.25)
    scale, noise, _ = fit_calibration(members, truth, fit_scale=False)
    assert scale.item() == 1.0 and noise.item() > 1.0  # the noise alone has to explain the rest


def test_out_of_bag_calibration_uses_only_the_members_that_did_not_train_on_a_row():
    k, n = 4, 50
    ys = torch.zeros(k, n, 1, dtype=torch.float64)
    ys[0] = 100.0  # member 0 is wildly off but trained on every row: it must not count
    ys[1:] = torch.randn(k - 1, n, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    oob = torch.ones(k, n, dtype=torch.bool)
    oob[0] = False
    oob[1, :10] = False  # rows 0-9 keep two out-of-bag members; still used
    scale, noise, rows = fit_calibration(ys, torch.zeros(n, 1, dtype=torch.float64), oob)
    assert rows == n and scale.item() < 3.0
    oob[2, :5] = False  # rows 0-4 keep one member: left out
    assert fit_calibration(ys, torch.zeros(n, 1, dtype=torch.float64), oob)[2] == n - 5


def test_bootstrap_resamples_are_seeded_and_give_out_of_bag_calibration_rows():
    net = EnsembleNet(2, 1, [4], members=5, bootstrap=True, bootstrap_seed=7)
    idx = net.bootstrap_rows(30)
    assert idx.shape == (5, 30) and torch.equal(idx, net.bootstrap_rows(30))
    assert not torch.equal(idx, EnsembleNet(2, 1, [4], members=5, bootstrap=True, bootstrap_seed=8).bootstrap_rows(30))
    x, yn = torch.randn(30, 2), torch.randn(30, 1)
    rows = MemberRows(net, x, yn)
    w = rows.weights(x)
    assert w.shape == (5, 30, 1) and w.dtype == x.dtype and torch.equal(w.sum(1), torch.full((5, 1), 30.0))
    assert torch.equal(w[2, :, 0], torch.bincount(idx[2], minlength=30).float())
    assert MemberRows(EnsembleNet(2, 1, [4], members=5), x, yn).weights(x) is None
    rows.calibrate_on(x, yn, same_as_val=True)
    _, _, source, oob = net._calibration_rows
    drawn = torch.zeros(5, 30, dtype=torch.bool).scatter_(1, idx, True)
    assert source == "out-of-bag rows" and torch.equal(oob, ~drawn)


@pytest.mark.parametrize("kind", ["huber", "tukey"])
def test_weighing_rows_by_their_draws_is_training_on_the_resample(kind):
    """The fused step's loss and gradients with bootstrap weights equal those of the gathered
    resample (each member on its own rows, the autograd reference), and finite differences."""
    torch.manual_seed(3)
    net = _ensemble(True, "gelu", [6, 5], out=2, bootstrap=True, bootstrap_seed=4)
    cfg = _cfg(kind)
    x, yn = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    idx, w = net.bootstrap_rows(20), net.bootstrap_weights(20, dtype=torch.float64)
    fp = FlatParams(net)
    math = MLPStepMath(net, fp, cfg)
    total, parts = math.backward(math.forward(math.normalize(x)), yn, LOSSES[kind], w)
    grad = fp.grad.clone()
    ref = ReferenceEngine(net, cfg, torch.optim.SGD(net.parameters(), lr=0.0), x, yn)
    net.zero_grad()
    ref_total, ref_parts = ref.loss(x[idx], yn[idx], 0)  # (K, N, D): member k's resample
    (ref_total * K).backward()
    torch.testing.assert_close(parts, ref_parts.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, torch.cat([p.grad.reshape(-1) for p in net.parameters()]), rtol=1e-9, atol=1e-12)
    eps, probe = 1e-6, torch.randn(fp.flat.shape, dtype=torch.float64)
    with torch.no_grad():
        values = []
        for sign in (1.0, -1.0):
            fp.flat.add_(probe, alpha=sign * eps)
            values.append(math.backward(math.forward(math.normalize(x)), yn, LOSSES[kind], w)[0] * K)
            fp.flat.sub_(probe, alpha=sign * eps)
    torch.testing.assert_close((values[0] - values[1]) / (2 * eps), torch.dot(grad, probe), rtol=1e-5, atol=1e-7)


# ---- training through the Trainer --------------------------------------------------------------
class _MemoryLogger:
    def __init__(self, run_dir):
        from pathlib import Path

        self.path = Path(run_dir) / "logs" / "metrics.jsonl"

    def log_metrics(self, row, step):
        pass

    def log_resolved(self, row):
        pass

    def log_hyperparams(self, row):
        pass

    def flush(self):
        pass


@pytest.fixture(scope="module")
def demo_table(demo_file):
    return load_rollouts(demo_file, ["gait_cadence", "gait_stride"], ["cot_ma15"], cache=False)


def _train(table, engine, *overrides, epochs=30):
    cfg = load_config(None, [f"trainer.max_epochs={epochs}", "trainer.progress=false", "trainer.log_period=1",
                             "trainer.save_period=100000", f"trainer.engine={engine}", "model.kind=ensemble",
                             f"model.members={K}", "model.layers=[16,8]", "trainer.lr=0.01",
                             "trainer.lr_patience=5", *overrides])
    torch.manual_seed(0)
    data = HDF5DataModule(table, cfg.data.batch_size, cfg.data.train_split, 0, "cpu").setup()
    for split in (data.train, data.val):
        split.x, split.y = split.x.double(), split.y.double()
    model = new_model(cfg, data).double()
    tr = Trainer(model, cfg.trainer, data, tempfile.mkdtemp(), _MemoryLogger(tempfile.mkdtemp()))
    tr.fit()
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    hist = torch.tensor([[h["loss/train"], h["loss/val"], h["lr"]] for h in tr.history], dtype=torch.float64)
    return weights, hist, tr


@pytest.mark.parametrize("overrides", [("model.bootstrap=false",),
                                       ("data.train_split=0.8", "trainer.grad_space=raw", "model.bootstrap=false"),
                                       ("data.batch_size=64", "data.train_split=0.8", "model.bootstrap=false"),
                                       ("model.bootstrap=true",), ("model.bootstrap=true", "data.batch_size=100")],
                         ids=["full-batch", "val-split", "minibatches", "bootstrap", "bootstrap-minibatches"])
def test_the_fused_engine_trains_an_ensemble_like_autograd(demo_table, overrides):
    ref = _train(demo_table, "reference", *overrides)
    fused = _train(demo_table, "eager", *overrides)
    assert isinstance(ref[2].engine, ReferenceEngine) and isinstance(fused[2].engine, FusedEngine)
    torch.testing.assert_close(fused[1], ref[1], rtol=1e-9, atol=0)
    assert (fused[0] - ref[0]).abs().max().item() <= 1e-9 * ref[0].abs().max().item()
    assert ref[1][-1, 0] < ref[1][0, 0]  # it learned


@pytest.mark.parametrize("overrides", [("data.train_split=0.8",), ("model.bootstrap=true",)], ids=["val-split", "bootstrap"])
def test_the_captured_program_trains_an_ensemble_like_autograd(demo_table, monkeypatch, overrides):
    """The CUDA-graph execution's epoch bodies (tensor lr, DevicePlateau), run uncaptured on CPU."""
    import rollfit.training.trainer as trainer_mod
    from rollfit.training.step import Captured

    ref = _train(demo_table, "reference", *overrides)
    monkeypatch.setattr(trainer_mod, "choose_engine", lambda *a, **k: "captured")
    graph = _train(demo_table, "reference", *overrides)
    assert isinstance(graph[2].engine.run, Captured)
    torch.testing.assert_close(graph[1], ref[1], rtol=1e-9, atol=0)


# ---- runs: checkpoints, loading, resume --------------------------------------------------------------
ARGS = ["model.kind=ensemble", "model.members=3", "model.layers=[8,8]", "trainer.max_epochs=30",
        "trainer.save_period=10", "trainer.log_period=5", "trainer.progress=false", "trainer.report=false",
        "data.batch_size=100", "data.train_split=0.8", "trainer.lr=0.01", "trainer.lr_patience=2", "data.cache=false"]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, demo_file):
    return train(demo_config(demo_file, ARGS), tmp_path_factory.mktemp("ens") / "run").run_dir


def test_a_run_loads_back_with_the_same_predictions_and_a_calibrated_std(ensemble_run):
    from rollfit.analysis.surrogate import Surrogate

    path = ensemble_run / "checkpoints" / checkpoint_name(29)
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    assert cfg["kind"] == "ensemble" and cfg["members"] == 3 and cfg["target_convention"] == "raw"
    assert cfg["calibration"].startswith("validation rows (") and cfg["activation"] == "gelu"
    as_trained = training_model(ckpt, path).eval()  # normalized convention, exact training weights
    loaded, _, _ = load_model(path)
    assert isinstance(loaded, EnsembleNet) and loaded.target_convention == "raw"
    x = torch.tensor([[0.9, 1.0], [1.1, 1.05], [1.0, 0.95]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), as_trained(x), rtol=1e-5, atol=1e-4)
        m1, s1 = loaded.predict_std(x)
        m2, s2 = as_trained.predict_std(x)
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-5)
    assert float(loaded.std_scale) > 0 and bool((s1 > 0).all())
    sur = Surrogate.load(path)
    np.testing.assert_allclose(sur.predict(x.numpy()), m1.numpy(), rtol=1e-6)


def test_an_ensemble_run_resumes_bit_for_bit(ensemble_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ensemble_run, run)
    resume(run / "checkpoints" / checkpoint_name(10))
    a = load_checkpoint(run / "checkpoints" / checkpoint_name(29))["model_state_dict"]
    b = load_checkpoint(ensemble_run / "checkpoints" / checkpoint_name(29))["model_state_dict"]
    differing = [k for k in b if not torch.equal(a[k], b[k])]
    assert not differing, f"weights differ from the uninterrupted run: {differing}"


@pytest.mark.slow
def test_bootstrap_run_records_out_of_bag_calibration(demo_file, tmp_path):
    args = [a for a in ARGS if not a.startswith("data.train_split")] + ["model.bootstrap=true", "model.members=6"]
    run = train(demo_config(demo_file, args), tmp_path / "run").run_dir
    cfg = load_checkpoint(run / "checkpoints" / checkpoint_name(29))["config"]
    assert cfg["bootstrap"] is True and cfg["calibration"].startswith("out-of-bag rows (")


def test_training_without_held_out_rows_says_the_intervals_are_calibrated_on_training_rows(demo_table):
    from rollfit.training.step import TRAINING_ROWS_NOTE

    with pytest.warns(UserWarning) as record:
        _, _, tr = _train(demo_table, "eager", "model.bootstrap=false", epochs=2)
    assert [str(w.message) for w in record if "held-out" in str(w.message)] == [TRAINING_ROWS_NOTE]
    tr.model.calibrate()
    assert tr.model.calibration.startswith("training rows (") and float(tr.model.std_scale) == 1.0


@pytest.mark.slow
def test_the_compiled_step_trains_an_ensemble_like_the_eager_one(demo_table):
    """``trainer.engine: compiled`` runs the same rank-polymorphic step under torch.compile."""
    eager = _train(demo_table, "eager", "data.train_split=0.8", epochs=12)
    compiled = _train(demo_table, "compiled", "data.train_split=0.8", epochs=12)
    assert compiled[2].engine.name == "compiled" and not compiled[2].engine.run.failed
    assert compiled[2].engine.run._fns  # something was compiled
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-7, atol=0)


def test_the_trainer_weighs_all_members_when_it_picks_threads(demo_table):
    """K members make a step K times wider: the trainer's thread choice counts them, as the
    engine's own does (a step of 8 x 64-wide members is no 'small step')."""
    from rollfit.training.step import activation_width

    *_, tr = _train(demo_table, "eager", epochs=1)
    assert tr.threads.width == activation_width(tr.model) == 16 * K
    assert tr.engine.threads is tr.threads
