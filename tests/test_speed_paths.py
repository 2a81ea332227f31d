"""The fast training paths compute what the plain path computes.

- the hand-derived step (``fastpath``) against autograd's double backward and against
  finite differences, for every architecture, activation, loss and penalty space;
- the network's forward-Jacobian input gradient against the double-backward definition;
- 200 epochs of training through the real ``Trainer``, the reference engine vs the fused
  engine under each execution strategy (captured: its epoch bodies run uncaptured on CPU);
- an activation registered in a test trains through the fused step like the reference;
- mini-batches gathered by index into reused buffers, in the Trainer's shuffle order;
- ``DevicePlateau`` against torch's ``ReduceLROnPlateau``, ``DirectAdam`` against ``opt.step()``;
- engine, device and thread choice, what ``auto`` resolved; CUDA-only checks skip without a GPU.

Tolerances. In float64 the paths differ only in operation order (rounding ~1e-16 per
operation); 200 full-batch epochs measured 2e-15, so 1e-10 leaves ample room while any
wrong term (even a 1e-6 one) fails. In float32 the same 200 epochs measured ~1e-6
relative on weights and losses (float32 epsilon 6e-8, amplified by training): 1e-4 allows
for other BLAS builds. Mini-batch training with
lr 0.1 is chaotic (rounding differences double every few epochs, measured), so the
mini-batch comparison uses lr 0.01 and 40 epochs, where it stays at 1e-15. The graph
engine keeps the learning rate in a tensor of the weights' dtype (0.1f in float32, 1.5e-8
off), so its comparisons run in float64.
"""
from __future__ import annotations

import copy
import itertools
import json
import tempfile
import warnings

import pytest
import torch
import torch.nn.functional as F

import rollfit.training.trainer as trainer_mod
from rollfit.config import TrainerConfig, load_config
from rollfit.data.datamodule import HDF5DataModule
from rollfit.data.reader import load_rollouts
from rollfit.errors import ConfigError, TrainingError
from rollfit.model import losses
from rollfit.model.network import RegressionNet
from rollfit.model import registry
from rollfit.model.registry import LOSSES, Activation
from rollfit.pipeline.run import build_model
from rollfit.training.fastpath import DirectAdam, FlatParams, MLPStepMath
from rollfit.training.logger import SimpleLogger
from rollfit.training.plateau import DevicePlateau
from rollfit.training.step import (Captured, Compiled, FusedEngine, ReferenceEngine, ThreadChoice, choose_engine,
                                   make_optimizer, resolve_device)
from rollfit.training.trainer import Trainer

CUDA = torch.cuda.is_available()
KINDS = list(LOSSES)


@pytest.fixture(autouse=True)
def _one_thread():
    """Same kernels in every run of a comparison (and no thread contention on shared machines)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the step's math -------------------------------------------------------------------------
def _net(residual, act, layers, k=1, d=3, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    net = RegressionNet(d, k, layers, input_mean=torch.randn(d), input_std=torch.rand(d) + 0.5,
                        residual=residual, activation=act).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # no zero biases: keep away from |w|'s kink
    return net


def _reference(net, cfg, x, yn, kind):
    """Loss components and weight gradients by autograd, with the double-backward penalty."""
    params = list(net.parameters())
    xr = x.clone().requires_grad_(True)
    pred = net.forward_normalized(xr)
    rec = losses.reconstruction_loss(pred, yn, kind, cfg.recon_delta)
    gp = losses.grad_penalty_double_backward(pred, xr, losses.gp_input_scale(net.input_std, cfg.grad_space))
    l1, l2 = losses.l1_penalty(params), losses.l2_penalty(params)
    total = cfg.recon_weight * rec + cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.grad_weight * gp
    grads = torch.autograd.grad(total, params)
    return torch.stack([total, rec, l1, l2, gp]).detach(), grads


def _fast(net, cfg, x, yn, kind):
    fp = FlatParams(net)
    math = MLPStepMath(net, fp, cfg)
    total, parts = math.backward(math.forward(math.normalize(x)), yn, LOSSES[kind])
    return torch.cat([total.reshape(1), parts]), fp


CASES = [  # residual, activation, layers, outputs, loss, penalty space
    (True, "gelu", [64, 32], 1, "huber", "normalized"),   # the seed (last block merged with its skip)
    (True, "gelu", [64, 32], 1, "huber", "raw"),
    (True, "silu", [8, 8, 5], 2, "cauchy", "normalized"),  # identity skip, then a Linear skip
    (True, "tanh", [6, 6], 3, "tukey", "raw"),
    (True, "relu", [7], 1, "mse", "normalized"),
    (False, "gelu", [8, 6, 4], 2, "geman", "raw"),          # sequential: Tanh after the last hidden layer
    (False, "silu", [5], 1, "welsch", "normalized"),
    (False, "relu", [6, 6], 1, "huber", "raw"),
]


@pytest.mark.parametrize("residual,act,layers,k,kind,space", CASES)
def test_fast_step_matches_autograd_double_backward(residual, act, layers, k, kind, space):
    net = _net(residual, act, layers, k)
    cfg = TrainerConfig(recon_type=kind, recon_weight=3.0, recon_delta=0.7, l1_weight=0.01, l2_weight=0.02,
                        grad_weight=0.37, grad_space=space)
    x = torch.randn(17, 3, dtype=torch.float64) * 2 + 0.5
    yn = torch.randn(17, k, dtype=torch.float64)
    want, grads = _reference(net, cfg, x, yn, kind)
    got, fp = _fast(net, cfg, x, yn, kind)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, r in zip(fp.grad_views, grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_fast_step_without_penalties_matches_autograd():
    net = _net(True, "gelu", [16, 8], k=2)
    cfg = TrainerConfig(grad_weight=0.0, l1_weight=0.0, l2_weight=0.0)
    x, yn = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    want, grads = _reference(net, cfg, x, yn, "huber")
    got, fp = _fast(net, cfg, x, yn, "huber")
    torch.testing.assert_close(got[:2], want[:2], rtol=1e-12, atol=0)  # total and recon
    assert got[4].item() == 0.0  # the penalty is not computed at weight 0 (as the plain engine reports)
    for g, r in zip(fp.grad_views, grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("residual,act,layers,k,kind,space", [CASES[0], CASES[2], CASES[5]])
def test_fast_gradient_matches_finite_differences(residual, act, layers, k, kind, space):
    net = _net(residual, act, layers, k, seed=1)
    cfg = TrainerConfig(recon_type=kind, l1_weight=0.01, l2_weight=0.02, grad_weight=0.37, grad_space=space)
    x = torch.randn(11, 3, dtype=torch.float64)
    yn = torch.randn(11, k, dtype=torch.float64)
    fp = FlatParams(net)
    math = MLPStepMath(net, fp, cfg)
    xn = math.normalize(x)
    math.backward(math.forward(xn), yn, LOSSES[kind])
    grad = fp.grad.clone()
    eps = 1e-6
    for i in torch.randperm(fp.flat.numel(), generator=torch.Generator().manual_seed(0))[:25].tolist():
        old = fp.flat[i].item()
        fp.flat[i] = old + eps
        up = math.backward(math.forward(xn), yn, LOSSES[kind])[0].item()
        fp.flat[i] = old - eps
        down = math.backward(math.forward(xn), yn, LOSSES[kind])[0].item()
        fp.flat[i] = old
        assert (up - down) / (2 * eps) == pytest.approx(grad[i].item(), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("space", ["normalized", "raw"])
@pytest.mark.parametrize("residual,act", [(True, "gelu"), (False, "silu"), (True, "tanh")])
def test_penalty_by_forward_jacobian_equals_double_backward(dtype, space, residual, act):
    net = _net(residual, act, [16, 8], k=2, seed=2, dtype=dtype)
    x = torch.randn(40, 3, dtype=dtype)
    scale = losses.gp_input_scale(net.input_std, space)
    xr = x.clone().requires_grad_(True)
    by_double_backward = losses.grad_penalty_double_backward(net.forward_normalized(xr), xr, scale)
    _, jac = net.forward_with_input_jacobian(x)
    by_jacobian = losses.grad_penalty(jac.sum(1), scale)
    assert by_jacobian.item() == pytest.approx(by_double_backward.item(), rel=1e-6)
    cfg = TrainerConfig(grad_space=space)
    parts = _fast(net, cfg, x, torch.zeros(40, 2, dtype=dtype), "mse")[0]
    assert parts[4].item() == pytest.approx(by_double_backward.item(), rel=1e-6)  # the explicit sweep


# ---- training through the Trainer ----------------------------------------------------------
class _MemoryLogger(SimpleLogger):
    """Keeps rows in memory only (these runs log every epoch)."""

    def flush(self) -> None:
        pass


@pytest.fixture(scope="module")
def demo_table(demo_file):
    return load_rollouts(demo_file, ["gait_cadence", "gait_stride"], ["cot_ma15"], cache=False)


def _train(table, mode, *overrides, dtype=torch.float32, epochs=200, force_mode=None, monkeypatch=None, model=None):
    """Train through the real Trainer; returns (final weights, per-epoch [train, val] losses, lrs, trainer)."""
    cfg = load_config(None, [f"trainer.max_epochs={epochs}", "trainer.progress=false", "trainer.log_period=1",
                             "trainer.save_period=100000", f"trainer.engine={mode}", *overrides])
    torch.manual_seed(0)
    data = HDF5DataModule(table, cfg.data.batch_size, cfg.data.train_split, 0, "cpu").setup()
    for split in (data.train, data.val):
        split.x, split.y = split.x.to(dtype), split.y.to(dtype)
    model = (model or build_model)(cfg, data).to(dtype)
    if force_mode is not None:
        monkeypatch.setattr(trainer_mod, "choose_engine", lambda *a, **k: force_mode)
    run_dir = tempfile.mkdtemp()
    tr = Trainer(model, cfg.trainer, data, run_dir, _MemoryLogger(run_dir))
    tr.fit()
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    hist = torch.tensor([[h["loss/train"], h["loss/val"]] for h in tr.history], dtype=torch.float64)
    return weights, hist, [h["lr"] for h in tr.history], tr


def _assert_same_training(a, b, rtol):
    assert a[1].shape == b[1].shape
    torch.testing.assert_close(b[1], a[1], rtol=rtol, atol=0)
    assert (b[0] - a[0]).abs().max().item() <= rtol * a[0].abs().max().item()
    torch.testing.assert_close(torch.tensor(b[2]), torch.tensor(a[2]), rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_fused_engine_trains_like_the_plain_path(demo_table, dtype, rtol):
    plain = _train(demo_table, "reference", "trainer.lr_patience=20", dtype=dtype)
    fused = _train(demo_table, "eager", "trainer.lr_patience=20", dtype=dtype)
    assert isinstance(plain[3].engine, ReferenceEngine) and isinstance(fused[3].engine, FusedEngine)
    assert min(plain[2]) < max(plain[2])  # the plateau scheduler cut the lr within the run
    _assert_same_training(plain, fused, rtol)


@pytest.mark.parametrize("overrides", [(), ("data.train_split=0.8",), ("trainer.grad_space=raw",)])
def test_graph_engine_program_trains_like_the_plain_path(demo_table, monkeypatch, overrides):
    """The captured execution's epoch bodies, run uncaptured on CPU (tensor lr, DevicePlateau)."""
    plain = _train(demo_table, "reference", "trainer.lr_patience=20", *overrides, dtype=torch.float64)
    graph = _train(demo_table, "reference", "trainer.lr_patience=20", *overrides, dtype=torch.float64,
                   force_mode="captured", monkeypatch=monkeypatch)
    assert isinstance(graph[3].engine.run, Captured) and isinstance(graph[3].sched, DevicePlateau)
    _assert_same_training(plain, graph, 1e-10)


@pytest.mark.parametrize("mode", ["eager", "captured"])
def test_minibatches_train_like_the_plain_path(demo_table, monkeypatch, mode):
    args = ("data.batch_size=64", "trainer.lr=0.01", "data.train_split=0.8")
    plain = _train(demo_table, "reference", *args, dtype=torch.float64, epochs=40)
    fast = _train(demo_table, "eager", *args, dtype=torch.float64, epochs=40,
                  force_mode=mode if mode == "captured" else None, monkeypatch=monkeypatch)
    _assert_same_training(plain, fast, 1e-10)


def _softplus_parts(z, second):
    s = torch.sigmoid(z)
    return F.softplus(z), s, (s * (1.0 - s) if second else None)


def test_a_registered_activation_is_one_entry_and_trains_like_the_reference(demo_table, monkeypatch):
    """Adding an activation is one registry entry: the network, the fused step and the C
    export pick it up (the config schema reads the registry's names at import)."""
    from rollfit.export import c_header

    entry = Activation("softplus", F.softplus, _softplus_parts, "log1pf(expf(z))")
    monkeypatch.setitem(registry.ACTIVATIONS, "softplus", entry)

    def softplus_net(cfg, data):
        return RegressionNet(**{**build_model(cfg, data).constructor_args(), "activation": "softplus"})

    for residual in ("true", "false"):
        args = ("trainer.lr_patience=5", f"model.residual={residual}", "model.layers=[16,8]")
        plain = _train(demo_table, "reference", *args, dtype=torch.float64, epochs=30, model=softplus_net)
        fused = _train(demo_table, "eager", *args, dtype=torch.float64, epochs=30, model=softplus_net)
        assert "softplus" in {m.name for m in fused[3].model.modules() if hasattr(m, "name")}
        _assert_same_training(plain, fused, 1e-10)
    assert "p_softplus" in c_header.own_functions("p")


def test_warm_started_loss_switches_inside_the_fast_step(demo_table):
    args = ("trainer.recon_type=tukey", "trainer.recon_start_epoch=30", "trainer.lr=0.01")
    plain = _train(demo_table, "reference", *args, dtype=torch.float64, epochs=60)
    fused = _train(demo_table, "eager", *args, dtype=torch.float64, epochs=60)
    _assert_same_training(plain, fused, 1e-10)


def test_minibatches_are_gathered_by_index_into_reused_buffers(demo_table):
    cfg = load_config(None, ["trainer.progress=false", "data.batch_size=64", "trainer.engine=eager"])
    torch.manual_seed(0)
    data = HDF5DataModule(demo_table, 64, 1.0, 0, "cpu").setup()
    tr = Trainer(build_model(cfg, data), cfg.trainer, data, tempfile.mkdtemp(), None)
    seen: list[list[tuple[int, torch.Tensor]]] = []
    forward = tr.engine.math.forward
    tr.engine.math.forward = lambda xb: (seen[-1].append((xb.data_ptr(), xb.clone())), forward(xb))[1]
    x_ptr, x_before = data.train.x.data_ptr(), data.train.x.clone()
    gen = torch.Generator().manual_seed(cfg.trainer.seed)
    for epoch in range(3):
        seen.append([])
        tr._train_epoch(epoch)
        perm = torch.randperm(len(data.train), generator=gen)  # the Trainer's shuffle order
        rows = torch.cat([xb for _, xb in seen[-1]])
        torch.testing.assert_close(rows, tr.engine.math.normalize(data.train.x)[perm], rtol=0, atol=0)
    assert [p for p, _ in seen[0]] == [p for p, _ in seen[1]] == [p for p, _ in seen[2]]  # same buffers
    assert len(seen[0]) == -(-len(data.train) // 64)
    assert data.train.x.data_ptr() == x_ptr and torch.equal(data.train.x, x_before)  # data untouched


def test_validation_is_the_model_after_the_step_and_reuse_is_dropped_on_change(demo_table):
    cfg = load_config(None, ["trainer.engine=eager"])
    torch.manual_seed(0)
    data = HDF5DataModule(demo_table, 65536, 1.0, 0, "cpu").setup()
    tr = Trainer(build_model(cfg, data), cfg.trainer, data, tempfile.mkdtemp(), None)
    eng, x, yn = tr.engine, data.train.x, tr._yn_train
    for epoch in range(3):
        eng.step(x, yn, epoch)
        val = eng.validate()
        with torch.no_grad():
            assert val.item() == pytest.approx(F.mse_loss(tr.model.forward_normalized(data.val.x), yn).item(), rel=1e-6)
    assert eng._fw_key[0] is x  # the next step will reuse the kept forward pass ...
    state = {k: v * 0.5 if k.startswith("mlp.") else v for k, v in tr.model.state_dict().items()}
    tr.model.load_state_dict(state)  # ... unless the weights change in between
    ref = ReferenceEngine(tr.model, cfg.trainer, torch.optim.Adam(tr.model.parameters()), x, yn)
    expected = ref.loss(x, yn, 3)[0]
    assert eng.step(x, yn, 3)["train"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_thread_choice_small_steps_use_one_thread_large_ones_the_faster_setting(monkeypatch):
    torch.set_num_threads(2)
    choice = ThreadChoice(torch.device("cpu"), width=64)
    assert choice.use(213).n == 1  # the seed's rows: one thread, no measuring
    seconds = {2: 0.5, 1: 0.2}  # a busy machine: the second thread costs more than it gives
    choice.record(2, 9.0)  # the first large epoch (allocations) is not counted
    tried = []
    while choice.best is None:
        ctx = choice.use(100_000, timed=True)
        tried.append(ctx.n)
        choice.record(ctx.n, seconds[ctx.n])
    assert sorted(tried) == [1, 1, 2, 2] and choice.best == 1
    assert choice.use(100_000).n == 1 and choice.decided(100_000)
    for _ in range(ThreadChoice.RETUNE - 1):
        ctx = choice.use(100_000, timed=True)
        assert ctx.n == 1
        choice.record(1, 0.21)
    ctx = choice.use(100_000, timed=True)
    assert choice.best is None and ctx.choice is choice  # measured again after RETUNE epochs
    choice.record(ctx.n, seconds[ctx.n])
    while choice.best is None:
        ctx = choice.use(100_000, timed=True)
        choice.record(ctx.n, seconds[ctx.n])
    for _ in range(3):  # the load changed: the chosen setting got much slower
        choice.record(choice.use(100_000, timed=True).n, 0.9)
    assert choice.best is None
    assert ThreadChoice(torch.device("cuda"), 64).use(100_000).n is None


def test_step_keeps_the_caller_thread_setting(demo_table):
    torch.set_num_threads(2)
    _train(demo_table, "eager", epochs=3)
    assert torch.get_num_threads() == 2


# ---- scheduler and optimizer pieces -----------------------------------------------------------
def _lr_opt(lr_tensor: bool):
    p = torch.nn.Parameter(torch.zeros(3))
    return torch.optim.Adam([p], lr=torch.tensor(0.1) if lr_tensor else 0.1, fused=True)


def test_device_plateau_mirrors_torch_reduce_lr_on_plateau():
    kw = dict(factor=0.5, patience=3, threshold=1e-3, min_lr=0.004)
    ref_opt, dev_opt = _lr_opt(True), _lr_opt(True)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, mode="min", threshold_mode="rel", **kw)
    dev = DevicePlateau(dev_opt, **kw)
    gen = torch.Generator().manual_seed(0)
    values = torch.cat([torch.linspace(1.0, 0.5, 20), torch.full((10,), 0.5), 0.4995 + torch.rand(40, generator=gen)
                        * 1e-3, torch.tensor([float("nan"), 0.3]), torch.full((60,), 0.3)]).float()
    for v in values:
        ref.step(v)
        dev.step(v)
        assert float(dev_opt.param_groups[0]["lr"]) == float(ref_opt.param_groups[0]["lr"])
        dev.sync_to_host()
        assert (dev.best, dev.num_bad_epochs, dev.last_epoch) == (ref.best, ref.num_bad_epochs, ref.last_epoch)
    assert float(ref_opt.param_groups[0]["lr"]) == pytest.approx(0.004)  # reached the floor
    # checkpoints: torch's format, interchangeable
    other = torch.optim.lr_scheduler.ReduceLROnPlateau(_lr_opt(True), mode="min", threshold_mode="rel", **kw)
    other.load_state_dict(dev.state_dict())
    assert other.state_dict() == ref.state_dict()
    back = DevicePlateau(_lr_opt(True), **kw)
    back.load_state_dict(ref.state_dict())
    back.sync_to_host()
    assert (back.best, back.num_bad_epochs) == (ref.best, ref.num_bad_epochs)


def test_device_plateau_counts_an_epoch_already_stepped_in_a_graph():
    opt = _lr_opt(True)
    dev = DevicePlateau(opt, factor=0.5, patience=0, threshold=1e-3, min_lr=0.0)
    val = torch.tensor(1.0)
    dev.device_step(val)
    dev.mark_applied(val)
    dev.step(val)  # counted, not stepped twice
    dev.sync_to_host()
    assert (dev.best, dev.num_bad_epochs, dev.last_epoch) == (1.0, 0, 1)


def test_direct_adam_equals_optimizer_step():
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Linear(8, 2)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [torch.optim.Adam(n.parameters(), lr=0.05, fused=True) for n in nets]
    direct = DirectAdam(opts[1])
    assert direct.usable()
    for i in range(6):
        grads = [torch.randn_like(p) for p in nets[0].parameters()]
        for net in nets:
            for p, g in zip(net.parameters(), grads):
                p.grad = g.clone()
        opts[0].step()
        direct.step()
        if i == 3:  # a replaced optimizer state (torch's load_state_dict) is picked up
            opts[1].load_state_dict(copy.deepcopy(opts[0].state_dict()))
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)
    assert opts[0].state_dict()["state"][0]["step"].item() == opts[1].state_dict()["state"][0]["step"].item() == 6
    assert not DirectAdam(torch.optim.Adam(nets[0].parameters(), amsgrad=True, fused=True)).usable()


def test_checkpointed_weights_of_a_fused_run_round_trip(demo_table, tmp_path):
    tr = _train(demo_table, "eager", epochs=5)[3]
    torch.save(tr.model.state_dict(), tmp_path / "w.pt")
    loaded = torch.load(tmp_path / "w.pt", weights_only=True)
    fresh = RegressionNet(2, 1, [64, 32])
    fresh.load_state_dict(loaded)
    for (name, a), b in zip(tr.model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


# ---- choosing engines and devices ---------------------------------------------------------------
def test_choose_engine_rules():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cfg = TrainerConfig()
    assert choose_engine(cfg, cpu, 213) == "eager"  # the seed: 213 rows x 10,002 epochs
    assert choose_engine(cfg, cpu, 100_000) == "compiled"  # 100k rows x 10,002 epochs
    assert choose_engine(cfg, cuda, 213) == "eager"  # captured is opt-in until a GPU run verified it
    assert choose_engine(TrainerConfig(engine="captured"), cuda, 213) == "captured"
    assert choose_engine(TrainerConfig(engine="captured"), cuda, 213, distributed=True) == "eager"  # all-reduce hook
    assert choose_engine(TrainerConfig(engine="reference"), cuda, 213) == "reference"
    with pytest.raises(ConfigError, match=r"^trainer.engine: expected 'captured' only with a CUDA device, but "
                                          r"the device is cpu; use trainer.engine=auto or eager$"):
        choose_engine(TrainerConfig(engine="captured"), cpu, 213)


@pytest.mark.parametrize("old,new", [("off", "reference"), ("jacobian", "eager"), ("fused", "eager"),
                                     ("compile", "compiled"), ("cudagraph", "captured"), ("auto", "auto")])
def test_old_compile_key_and_values_are_read_with_a_one_line_note(old, new, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"trainer:\n  compile: {old}\n")  # a bare off is YAML's false
    for how in ({"path": path}, {"overrides": [f"trainer.compile={old}"]}, {"overrides": [f"trainer.engine={old}"]}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert load_config(**how).trainer.engine == new
        notes = [str(w.message) for w in caught]
        key = "engine" if "trainer.engine" in str(how) else "compile"
        if key == "engine" and old == new:
            assert notes == []
        else:
            assert notes == [f"trainer.{key}: '{old}' is now trainer.engine: '{new}'"]
    with pytest.raises(ConfigError, match=r"expected trainer.engine or its old name trainer.compile, not both"):
        load_config(None, ["trainer.compile=off", "trainer.engine=eager"])
    with pytest.raises(ConfigError, match=r"key 'trainer.threads': expected 'auto' or an integer >= 1, but got 0"):
        load_config(None, ["trainer.threads=0"])


def test_device_auto_rule(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("auto", "captured", rows=213).type == "cuda"  # a captured epoch beats the CPU
    assert resolve_device("auto", "auto", rows=213).type == "cpu"  # eager GPU steps are launch-bound
    assert resolve_device("auto", "eager", rows=100_000).type == "cuda"
    assert resolve_device("cpu", "auto", rows=100_000).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "auto", rows=100_000).type == "cpu"


def test_threads_fixed_deterministic_and_resumed_runs_time_nothing(demo_table):
    torch.set_num_threads(2)
    choice = ThreadChoice(torch.device("cpu"), width=64, fixed=3)
    assert choice.use(213).n == choice.use(100_000, timed=True).n == 3 and choice.decided(100_000)
    quiet = ThreadChoice(torch.device("cpu"), width=64, timed=False)
    ctx = quiet.use(100_000, timed=True)
    assert ctx.n is None and ctx.choice is None and quiet.decided(100_000)  # torch's setting, never timed
    assert quiet.describe(100_000) == 2 and quiet.describe(213) == 1
    assert ThreadChoice(torch.device("cpu"), 64).describe(100_000) == "timed: 1 or 2"
    det = _train(demo_table, "eager", "trainer.deterministic=true", epochs=2)[3]
    assert not det.threads.timed
    tr = _train(demo_table, "eager", "trainer.threads=2", epochs=2)[3]
    assert tr.threads.timed and tr.resolved()["threads"] == 2
    tr.load_state(copy.deepcopy(tr.training_state(1)))  # a resume
    assert not tr.threads.timed


def test_resolved_choices_are_recorded_in_checkpoint_and_hparams(demo_table, tmp_path):
    cfg = load_config(None, ["trainer.max_epochs=3", "trainer.progress=false"])
    data = HDF5DataModule(demo_table, 65536, 1.0, 0, "cpu").setup()
    logger = SimpleLogger(tmp_path / "logs")
    logger.log_hyperparams(cfg.to_dict())
    tr = Trainer(build_model(cfg, data), cfg.trainer, data, tmp_path, logger)
    want = {"device": "cpu", "engine": "eager", "threads": 1, "torch": torch.__version__}
    assert tr.resolved() == want
    assert json.loads(logger.hparams_path.read_text())["resolved"] == want
    assert json.loads(logger.hparams_path.read_text())["trainer"]["engine"] == "auto"
    tr.fit()
    assert torch.load(tr.last_checkpoint, weights_only=True)["config"]["resolved"] == want


def _compiled_engine(demo_table, strict, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    cfg = load_config(None, [f"trainer.engine={'compiled' if strict else 'auto'}"])
    data = HDF5DataModule(demo_table, 65536, 1.0, 0, "cpu").setup()
    model = build_model(cfg, data)
    opt = make_optimizer(list(model.parameters()), cfg.trainer, "compiled", torch.device("cpu"))
    eng = FusedEngine(model, cfg.trainer, opt, data.val.x, data.val.y, "compiled")
    assert isinstance(eng.run, Compiled)
    return eng, data


def test_compile_failure_is_an_error_when_asked_for(demo_table, monkeypatch):
    eng, data = _compiled_engine(demo_table, True, monkeypatch)
    with pytest.raises(TrainingError, match=r"^trainer.engine: expected torch.compile to work on this machine, "
                                            r"but it failed \(RuntimeError: no C\+\+ compiler found\); "
                                            r"use trainer.engine=eager$"):
        eng.step(data.train.x, data.train.y, 0)


def test_compile_failure_under_auto_falls_back_to_the_eager_step(demo_table, monkeypatch):
    eng, data = _compiled_engine(demo_table, False, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = eng.step(data.train.x, data.train.y, 0)
    assert torch.isfinite(out["train"]) and eng.run.failed
    assert any("training with the eager fused step" in str(w.message) for w in caught)


# ---- GPU (skipped without CUDA) -----------------------------------------------------------------
@pytest.mark.skipif(not CUDA, reason="no CUDA device")
@pytest.mark.parametrize("overrides", [(), ("data.batch_size=64", "trainer.lr=0.01")])
def test_captured_cuda_graph_trains_like_the_eager_fused_step(demo_table, overrides):
    def run(mode):
        cfg = load_config(None, ["trainer.max_epochs=60", "trainer.progress=false", "trainer.log_period=1",
                                 f"trainer.engine={mode}", "trainer.device=cuda", *overrides])
        torch.manual_seed(0)
        data = HDF5DataModule(demo_table, cfg.data.batch_size, 1.0, 0, "cuda").setup()
        tr = Trainer(build_model(cfg, data), cfg.trainer, data, tempfile.mkdtemp(), None)
        tr.fit()
        return tr

    graph, eager = run("captured"), run("eager")
    graphs = graph.engine.run._graphs
    assert graphs and all(g is not None for g in graphs.values())  # epochs after the warm-up ran as replays
    for a, b in zip(graph.history, eager.history):
        assert a["loss/train"] == pytest.approx(b["loss/train"], rel=1e-3)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-6)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_device_plateau_on_cuda_mirrors_torch():
    kw = dict(factor=0.5, patience=2, threshold=1e-3, min_lr=0.01)
    p, q = (torch.nn.Parameter(torch.zeros(2, device="cuda")) for _ in range(2))
    ref_opt = torch.optim.Adam([p], lr=torch.tensor(0.1, device="cuda"), fused=True, capturable=True)
    dev_opt = torch.optim.Adam([q], lr=torch.tensor(0.1, device="cuda"), fused=True, capturable=True)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, mode="min", threshold_mode="rel", **kw)
    dev = DevicePlateau(dev_opt, **kw)
    for v in itertools.chain([1.0, 0.9], [0.9] * 12, [0.5] * 5):
        t = torch.tensor(v, device="cuda")
        ref.step(t)
        dev.step(t)
        assert float(dev_opt.param_groups[0]["lr"]) == float(ref_opt.param_groups[0]["lr"])


def test_tensor_lr_checkpoints_hold_a_float_and_load_in_place():
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = make_optimizer(params, TrainerConfig(lr=0.25), "captured", torch.device("cpu"))
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor)
    state = opt.state_dict()
    assert state["param_groups"][0]["lr"] == 0.25 and opt.param_groups[0]["lr"] is lr
    state["param_groups"][0]["lr"] = 0.125
    opt.load_state_dict(state)  # torch's loader would replace the tensor the graph reads
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.125
    plain = make_optimizer([torch.nn.Parameter(torch.zeros(3))], TrainerConfig(), "eager", torch.device("cpu"))
    plain.load_state_dict(opt.state_dict())
    assert plain.param_groups[0]["lr"] == 0.125


@pytest.mark.parametrize("mode", ["eager", "captured"])
def test_state_reload_continues_exactly(demo_table, monkeypatch, mode):
    """A Trainer rebuilt from a mid-run state (as resume and rollback do) ends where the
    uninterrupted run ends (CPU: same kernels, so bit for bit)."""
    if mode == "captured":
        monkeypatch.setattr(trainer_mod, "choose_engine", lambda *a, **k: "captured")
    args = ["trainer.progress=false", "trainer.save_period=100000", "trainer.lr_patience=3", "trainer.max_epochs=30",
            "trainer.lr_threshold=0.5"]  # the plateau scheduler cuts the lr before and after the reload

    def trainer():
        cfg = load_config(None, args)
        torch.manual_seed(0)
        data = HDF5DataModule(demo_table, 65536, 1.0, 0, "cpu").setup()
        run_dir = tempfile.mkdtemp()
        return Trainer(build_model(cfg, data), cfg.trainer, data, run_dir, _MemoryLogger(run_dir))

    whole = trainer()
    whole.fit()
    first = trainer()
    first.cfg.max_epochs = 15
    first.fit()
    state = copy.deepcopy(first.training_state(14))
    second = trainer()
    second.load_state(state)
    second.fit()
    for a, b in zip(whole.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    assert whole.history[-1]["lr"] == second.history[-1]["lr"] < 0.05
