"""Taking over runs of the original pipeline: exact predictions, strict and helpful loading.

``OriginalNet`` below is written from REFERENCE.md alone (not from rollfit.model): it stands
in for the original's ``network.py``, both to write original-format runs and to check that
rollfit checkpoints load in the original's code path. ``numpy_forward`` is a third,
independent forward computed straight from a state_dict.
"""
from __future__ import annotations

import math
import shutil
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from rollfit.analysis.surrogate import Surrogate
from rollfit.errors import CheckpointError
from rollfit.runs.checkpoint import load_checkpoint, load_model, model_config

ACTS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}


# ---- the original pipeline's network and run folder, from REFERENCE.md -------------------
class _OrigResidual(nn.Module):
    def __init__(self, d_in, d_out, layers, act):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(layers[i - 1], layers[i]) for i in range(1, len(layers)))
        self.skip_connections = nn.ModuleList(
            nn.Identity() if layers[i - 1] == layers[i] else nn.Linear(layers[i - 1], layers[i])
            for i in range(1, len(layers)))
        self.input_layer = nn.Linear(d_in, layers[0])
        self.output_layer = nn.Linear(layers[-1], d_out)
        self.act = ACTS.get(act, nn.GELU)()

    def forward(self, x):
        h = self.act(self.input_layer(x))
        for i, (layer, skip) in enumerate(zip(self.layers, self.skip_connections)):
            z = layer(h)
            h = (self.act(z) if i < len(self.layers) - 1 else z) + skip(h)
        return self.output_layer(h)


class _OrigSequential(nn.Module):
    def __init__(self, d_in, d_out, layers, act):
        super().__init__()
        def a(i):
            return nn.Tanh() if len(layers) > 1 and i == len(layers) - 1 else ACTS.get(act, nn.GELU)()
        mods = [("input", nn.Linear(d_in, layers[0])), ("act0", a(0))]
        for i in range(1, len(layers)):
            mods += [(f"hidden{i}", nn.Linear(layers[i - 1], layers[i])), (f"act{i}", a(i))]
        mods.append(("output", nn.Linear(layers[-1], d_out)))
        self.mlp = nn.Sequential(OrderedDict(mods))

    def forward(self, x):
        return self.mlp(x)


class OriginalNet(nn.Module):
    """The original's RegressionNet (constructor of the seed's loading snippet)."""

    def __init__(self, input_dim, output_dim, layers, input_mean, input_std, target_mean, target_std,
                 residual=True, activation="gelu"):
        super().__init__()
        for name, v in (("input_mean", input_mean), ("input_std", input_std),
                        ("target_mean", target_mean), ("target_std", target_std)):
            self.register_buffer(name, torch.as_tensor(v, dtype=torch.float32).clone())
        cls = _OrigResidual if residual else _OrigSequential
        self.mlp = cls(input_dim, output_dim, list(layers), activation)

    def forward(self, x, normalize=True, denormalize=False):
        y = self.mlp((x - self.input_mean) / self.input_std if normalize else x)
        return y * self.target_std + self.target_mean if denormalize else y


def write_original_run(folder: Path, *, residual: bool, layers: list[int], activation: str = "gelu",
                       in_lbl=("a", "b", "c"), out_lbl=("f", "g"), seed: int = 0,
                       write_yaml: bool = True) -> Path:
    """An original-format run folder: random weights and biases, an Adam step taken, the
    checkpoint dict of REFERENCE.md (lists in ``config``, no activation, no labels)."""
    torch.manual_seed(seed)
    d_in, d_out = len(in_lbl), len(out_lbl)
    stats = dict(input_mean=torch.randn(d_in), input_std=torch.rand(d_in) + 0.5,
                 target_mean=torch.randn(d_out) * 10, target_std=torch.rand(d_out) * 5 + 1)
    net = OriginalNet(d_in, d_out, layers, residual=residual, activation=activation, **stats)
    for p in net.parameters():  # non-zero biases, so a dropped bias would show
        nn.init.uniform_(p, -0.6, 0.6)
    with torch.no_grad():  # outputs away from zero, so relative errors are meaningful
        (net.mlp.output_layer if residual else net.mlp.mlp.output).bias.add_(3.0)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=100, threshold=1e-3)
    loss = net(torch.randn(8, d_in)).pow(2).mean()
    loss.backward()
    opt.step()
    sched.step(loss.item())
    config = {"input_dim": d_in, "output_dim": d_out, "layers": list(layers), "residual": residual,
              **{k: v.tolist() for k, v in stats.items()}}
    ckpt = {"epoch": 7, "model_state_dict": net.state_dict(), "optimizer_state_dict": opt.state_dict(),
            "scheduler_state_dict": sched.state_dict(), "config": config}
    (folder / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, folder / "checkpoints" / "ep_000007.ckpt")
    if write_yaml:
        run_yaml = {"data": {"in_lbl": list(in_lbl), "out_lbl": list(out_lbl), "train_split": 1.0},
                    "model": {"residual": residual, "layers": list(layers), "activation": activation},
                    "trainer": {"max_epochs": 7, "lr": 0.01}}
        (folder / "config.yaml").write_text(yaml.safe_dump(run_yaml))
    return folder


def _np_act(name, z):
    if name == "gelu":
        return 0.5 * z * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    if name == "silu":
        return z / (1.0 + np.exp(-z))
    if name == "relu":
        return np.maximum(z, 0.0)
    return np.tanh(z)


def numpy_forward(sd: dict, layers: list[int], residual: bool, activation: str, x: np.ndarray) -> np.ndarray:
    """Physical prediction of an original network in float64, straight from its state_dict."""
    w = {k: v.double().numpy() for k, v in sd.items()}
    def lin(name, h):
        return h @ w[f"{name}.weight"].T + w[f"{name}.bias"]
    h = (x.astype(np.float64) - w["input_mean"]) / w["input_std"]
    if residual:
        h = _np_act(activation, lin("mlp.input_layer", h))
        for i in range(1, len(layers)):
            z = lin(f"mlp.layers.{i - 1}", h)
            z = _np_act(activation, z) if i < len(layers) - 1 else z
            skip = lin(f"mlp.skip_connections.{i - 1}", h) if f"mlp.skip_connections.{i - 1}.weight" in w else h
            h = z + skip
        return lin("mlp.output_layer", h)
    for i in range(len(layers)):
        name = "mlp.mlp.input" if i == 0 else f"mlp.mlp.hidden{i}"
        act = "tanh" if len(layers) > 1 and i == len(layers) - 1 else activation
        h = _np_act(act, lin(name, h))
    return lin("mlp.mlp.output", h)


def rel_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float)) / np.maximum(np.abs(b), 1e-12)))


def scaled_err(a, b) -> float:
    """Error relative to each output's magnitude over the batch (float32 vs float64 near zero)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.max(np.abs(b), axis=0)))


def _inputs(n=64, d=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# ---- the real original run --------------------------------------------------------------
def test_reference_run_reproduced_from_folder_and_checkpoint(fixtures_dir):
    run = fixtures_dir / "reference_run"
    ref = np.load(run / "expected_predictions.npz")
    for where in (run, run / "checkpoints" / "ep_000200.ckpt"):
        s = Surrogate.load(where)
        assert s.in_lbl == ["gait_cadence", "gait_stride"] and s.out_lbl == ["cot_ma15"]
        assert s.model.target_convention == "raw" and s.config["activation"] == "gelu"
        assert rel_err(s.predict(ref["X"]), ref["Y"]) < 1e-5


def test_reference_run_outputs_are_raw_units_not_denormalized_twice(fixtures_dir):
    s = Surrogate.load(fixtures_dir / "reference_run")
    ref = np.load(fixtures_dir / "reference_run" / "expected_predictions.npz")
    x = torch.as_tensor(ref["X"])
    with torch.no_grad():
        twice = s.model(x, denormalize=True).numpy()  # what the original's plotting showed
    assert 30 < ref["Y"].mean() < 120 and twice.mean() > 5 * ref["Y"].mean()


def test_reference_run_optimizer_and_scheduler_state_fit_the_rebuilt_model(fixtures_dir):
    """--resume/--init-from need the original's Adam state to line up with our parameters."""
    path = fixtures_dir / "reference_run" / "checkpoints" / "ep_000200.ckpt"
    model, cfg, _ = load_model(path)
    ckpt = load_checkpoint(path)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    opt.load_state_dict(ckpt["optimizer_state_dict"])
    for p in model.parameters():
        assert opt.state[p]["exp_avg"].shape == p.shape
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    sched.load_state_dict(ckpt["scheduler_state_dict"])
    assert sched.last_epoch == 201 and opt.param_groups[0]["lr"] == pytest.approx(0.005)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(16, 2)).pow(2).mean().backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


# ---- original runs built from the layout --------------------------------------------------
LAYOUTS = [(False, [16, 12, 8], "silu"), (False, [10], "relu"), (False, [8, 8], "gelu"),
           (True, [16, 16, 8], "tanh"), (True, [12], "silu")]


@pytest.mark.parametrize("residual,layers,activation", LAYOUTS)
def test_original_run_matches_independent_forward(tmp_path, residual, layers, activation):
    run = write_original_run(tmp_path / "run", residual=residual, layers=layers, activation=activation)
    s = Surrogate.load(run)
    sd = torch.load(run / "checkpoints" / "ep_000007.ckpt", weights_only=True)["model_state_dict"]
    x = _inputs()
    expected = numpy_forward(sd, layers, residual, activation, x)
    assert s.in_lbl == ["a", "b", "c"] and s.out_lbl == ["f", "g"]
    assert s.model.target_convention == "raw"
    assert scaled_err(s.predict(x), expected) < 1e-5
    assert scaled_err(s.predict_dict({"c": x[:, 2], "a": x[:, 0], "b": x[:, 1]})["g"], expected[:, 1]) < 1e-5
    exact = s.model.double().predict(torch.as_tensor(x, dtype=torch.float64)).numpy()
    assert rel_err(exact, expected) < 1e-9  # same structure: float64 agrees to rounding


def test_sequential_state_dict_names_are_the_originals(tmp_path):
    run = write_original_run(tmp_path / "run", residual=False, layers=[6, 5, 4])
    model, _, _ = load_model(run)
    assert [k for k in model.state_dict() if k.startswith("mlp.")] == [
        f"mlp.mlp.{n}.{p}" for n in ("input", "hidden1", "hidden2", "output") for p in ("weight", "bias")]
    assert (model.mlp.mlp.act2.name, model.mlp.mlp.act0.name) == ("tanh", "gelu")  # registry activations


def test_original_gradient_matches_finite_differences(tmp_path):
    run = write_original_run(tmp_path / "run", residual=False, layers=[8, 6], activation="silu")
    s = Surrogate.load(run)
    x = _inputs(n=4).astype(np.float64)
    model64 = s.model.double()
    jac = np.stack([torch.autograd.functional.jacobian(
        lambda v: model64.forward(v.unsqueeze(0))[0], torch.as_tensor(row)).numpy() for row in x])
    eps = 1e-6
    fd = np.stack([(model64.forward(torch.as_tensor(x + eps * e)).detach().numpy()
                    - model64.forward(torch.as_tensor(x - eps * e)).detach().numpy()) / (2 * eps)
                   for e in np.eye(3)], axis=2)
    np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-7)
    s.model.float()
    np.testing.assert_allclose(s.gradient(x.astype(np.float32)), fd, rtol=1e-3, atol=1e-4)


# ---- missing or contradicting information --------------------------------------------------
def test_missing_config_yaml_names_what_is_missing_and_the_flag(tmp_path):
    run = write_original_run(tmp_path / "run", residual=True, layers=[8, 4], write_yaml=False)
    ckpt = run / "checkpoints" / "ep_000007.ckpt"
    with pytest.raises(CheckpointError) as exc:
        Surrogate.load(run)
    assert str(exc.value) == (
        f"{ckpt}: expected the activation in {run.resolve() / 'config.yaml'} (original checkpoints do not store "
        "it), but the file is missing; pass --activation NAME (one of gelu, silu, relu, tanh)")


@pytest.mark.filterwarnings("ignore:.*placeholder labels")
def test_activation_flag_completes_a_run_without_config(tmp_path):
    run = write_original_run(tmp_path / "run", residual=True, layers=[8, 4], activation="relu", write_yaml=False)
    with pytest.warns(UserWarning, match="placeholder labels x0, x1, x2"):
        s = Surrogate.load(run, activation="relu")
    sd = load_checkpoint(run / "checkpoints" / "ep_000007.ckpt")["model_state_dict"]
    x = _inputs()
    assert s.in_lbl == ["x0", "x1", "x2"] and s.out_lbl == ["y0", "y1"]
    assert scaled_err(s.predict(x), numpy_forward(sd, [8, 4], True, "relu", x)) < 1e-5


def test_config_without_activation_key_is_an_error(tmp_path):
    run = write_original_run(tmp_path / "run", residual=True, layers=[8])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["model"]["activation"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match=r"but it has no model.activation; pass --activation NAME"):
        load_model(run)
    assert load_model(run, activation="gelu")[1]["activation"] == "gelu"


def test_activation_flag_must_agree_with_the_record(tmp_path, trained_run):
    run = write_original_run(tmp_path / "run", residual=True, layers=[8], activation="silu")
    with pytest.raises(CheckpointError) as exc:
        load_model(run, activation="relu")
    assert str(exc.value) == (f"--activation: expected 'silu' as recorded in {run.resolve() / 'config.yaml'}, "
                              "but got 'relu'; drop the flag")
    assert load_model(run, activation="silu")[1]["activation"] == "silu"
    with pytest.raises(CheckpointError, match=r"^--activation: expected 'gelu' as recorded in .*best\.ckpt, but got 'tanh'"):
        load_model(trained_run, activation="tanh")
    with pytest.raises(CheckpointError) as exc:
        load_model(run, activation="selu")
    assert str(exc.value) == ("--activation: expected one of gelu, silu, relu, tanh, but got 'selu'; "
                              "did you mean 'silu'?")


def test_unknown_activation_name_is_gelu_as_in_the_original(tmp_path):
    run = write_original_run(tmp_path / "run", residual=False, layers=[8, 6], activation="leaky_relu")
    with pytest.warns(UserWarning, match="'leaky_relu' is not one of .* trained it as gelu"):
        s = Surrogate.load(run)
    sd = load_checkpoint(run / "checkpoints" / "ep_000007.ckpt")["model_state_dict"]
    x = _inputs()
    assert scaled_err(s.predict(x), numpy_forward(sd, [8, 6], False, "gelu", x)) < 1e-5


def test_config_of_another_run_is_rejected(tmp_path):
    run = write_original_run(tmp_path / "run", residual=True, layers=[8, 4])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["layers"] = [64, 32]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError) as exc:
        load_model(run)
    assert str(exc.value) == (f"{run.resolve() / 'config.yaml'}: model.layers: expected [8, 4] as in the checkpoint, "
                              "but got [64, 32]; this config.yaml belongs to another run")


def test_labels_must_match_the_network_width(tmp_path):
    run = write_original_run(tmp_path / "run", residual=True, layers=[8])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["in_lbl"] = ["a", "b"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match=r"data.in_lbl: expected 3 label\(s\) as the checkpoint's network "
                                              r"has, but got \['a', 'b'\]"):
        load_model(run)


def test_damaged_config_yaml_is_an_error_not_defaults(tmp_path):
    run = write_original_run(tmp_path / "run", residual=True, layers=[8])
    (run / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(CheckpointError, match=r"config.yaml: expected the run's YAML config, but it could not be parsed"):
        load_model(run)
    (run / "config.yaml").write_text("- just\n- a list\n")
    with pytest.raises(CheckpointError, match=r"config.yaml: expected a YAML mapping .*, but got list"):
        load_model(run)


def test_a_hostile_config_yaml_in_a_run_is_refused_without_expanding(tmp_path):
    """A received run's config.yaml goes through the same bounded loader as --config."""
    from test_config import LAUGHS

    run = write_original_run(tmp_path / "run", residual=True, layers=[8])
    (run / "config.yaml").write_text(LAUGHS)
    with pytest.raises(CheckpointError) as err:
        load_model(run)
    assert str(err.value) == (f"{run / 'config.yaml'}: expected the run's YAML config, but it could not be parsed "
                              "(expected at most 100000 values after expanding aliases, but got 4.9e+08)")


def test_checkpoint_kept_beside_its_config_and_not_two_levels_up(tmp_path):
    run = write_original_run(tmp_path / "run", residual=True, layers=[8], activation="tanh")
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(run / "checkpoints" / "ep_000007.ckpt", loose / "model.ckpt")
    shutil.copy(run / "config.yaml", loose / "config.yaml")
    assert Surrogate.load(loose / "model.ckpt").config["activation"] == "tanh"
    nested = tmp_path / "other" / "sub"
    nested.mkdir(parents=True)
    shutil.copy(run / "config.yaml", tmp_path / "other" / "config.yaml")  # unrelated file two levels up
    shutil.copy(run / "checkpoints" / "ep_000007.ckpt", nested / "model.ckpt")
    with pytest.raises(CheckpointError, match=r"sub/config.yaml \(original .* the file is missing"):
        load_model(nested / "model.ckpt")


@pytest.mark.filterwarnings("ignore:.*placeholder labels")
def test_weights_of_the_wrong_layout_fail_in_one_line(tmp_path):
    run = write_original_run(tmp_path / "run", residual=False, layers=[8, 4])
    path = run / "checkpoints" / "ep_000007.ckpt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["residual"] = True
    torch.save(ckpt, path)
    (run / "config.yaml").unlink()
    with pytest.raises(CheckpointError) as exc:
        load_model(run, activation="gelu")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: expected weights of layers=[8, 4] residual=True, but got missing "
                          "'mlp.layers.0.weight', 'mlp.layers.0.bias', 'mlp.skip_connections.0.weight' (+5 more)")
    assert msg.endswith("the weights have the sequential layout (mlp.mlp.*), not the residual one")


def test_compiled_or_ddp_prefixes_are_removed(tmp_path):
    run = write_original_run(tmp_path / "run", residual=True, layers=[8, 4])
    path = run / "checkpoints" / "ep_000007.ckpt"
    ckpt = torch.load(path, weights_only=True)
    plain = Surrogate.load(run).predict(_inputs())
    ckpt["model_state_dict"] = {f"_orig_mod.{k}": v for k, v in ckpt["model_state_dict"].items()}
    torch.save(ckpt, path)
    np.testing.assert_array_equal(Surrogate.load(run).predict(_inputs()), plain)


# ---- rollfit checkpoints in the original's code path ----------------------------------------
def test_seed_snippet_loads_a_rollfit_checkpoint(trained_run):
    """The seed's "Loading Checkpoints" snippet, verbatim but for the path, with both the
    original's RegressionNet (OriginalNet) and rollfit's."""
    from rollfit.model.network import RegressionNet as RollfitNet

    path = trained_run / "checkpoints" / "best.ckpt"  # what the run folder means (Surrogate.load's choice)
    s = Surrogate.load(trained_run)
    assert s.checkpoint == path
    x = torch.as_tensor(s.as_matrix({"gait_cadence": [0.9, 1.0, 1.1], "gait_stride": [1.0, 1.05, 0.95]}))
    for RegressionNet in (OriginalNet, RollfitNet):
        checkpoint = torch.load(str(path))
        config = checkpoint['config']

        # Reconstruct model
        model = RegressionNet(
            input_dim=config['input_dim'],
            output_dim=config['output_dim'],
            layers=config['layers'],
            input_mean=torch.tensor(config['input_mean']),
            input_std=torch.tensor(config['input_std']),
            target_mean=torch.tensor(config['target_mean']),
            target_std=torch.tensor(config['target_std']),
            residual=config['residual']
        )

        model.load_state_dict(checkpoint['model_state_dict'])
        model.eval()
        assert config["target_convention"] == "raw" and config["format_version"] >= 1
        with torch.no_grad():  # stored weights in original units: model(x) is right in both classes
            assert rel_err(model(x).numpy(), s.predict(x.numpy())) < 1e-5


def test_rollfit_checkpoint_must_declare_its_convention(tmp_path, trained_run):
    path = sorted((trained_run / "checkpoints").glob("ep_*.ckpt"))[-1]
    ckpt = load_checkpoint(path)
    assert model_config(ckpt, path)["target_convention"] == "raw"
    del ckpt["config"]["target_convention"]
    with pytest.raises(CheckpointError, match=r"config: expected keys target_convention, but they are missing"):
        model_config(ckpt, path)


def test_original_run_has_no_rollfit_keys_needed(tmp_path):
    """Nothing beyond REFERENCE.md's checkpoint dict plus config.yaml is read."""
    run = write_original_run(tmp_path / "run", residual=True, layers=[8])
    ckpt = load_checkpoint(run / "checkpoints" / "ep_000007.ckpt")
    assert set(ckpt) == {"epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "config"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = model_config(ckpt, run / "checkpoints" / "ep_000007.ckpt")
    assert cfg["target_convention"] == "raw" and cfg["run_config"]["trainer"]["max_epochs"] == 7


# ---- rollfit predict on original runs --------------------------------------------------------
def _predict_cli(run: Path, x: np.ndarray, labels: list[str], tmp_path: Path, *extra: str) -> np.ndarray:
    import csv

    from rollfit.cli.main import main

    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["note", *labels[::-1]])  # another column order than in_lbl, plus a pass-through column
        w.writerows([[f"r{i}", *[f"{v:.9g}" for v in row[::-1]]] for i, row in enumerate(x)])
    assert main(["predict", "--run", str(run), "--input", str(src), "--csv", str(out), *extra]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    return np.array([[float(v) for v in r[1 + len(labels):]] for r in rows[1:]])


def test_predict_cli_reproduces_the_reference_run(fixtures_dir, tmp_path):
    ref = np.load(fixtures_dir / "reference_run" / "expected_predictions.npz")
    y = _predict_cli(fixtures_dir / "reference_run", ref["X"], ["gait_cadence", "gait_stride"], tmp_path)
    assert y.shape == ref["Y"].shape and rel_err(y, ref["Y"]) < 1e-5


def test_predict_cli_on_a_sequential_original_run(tmp_path):
    run = write_original_run(tmp_path / "run", residual=False, layers=[16, 12, 8], activation="silu")
    sd = load_checkpoint(run / "checkpoints" / "ep_000007.ckpt")["model_state_dict"]
    x = _inputs()
    y = _predict_cli(run, x, ["a", "b", "c"], tmp_path)
    assert scaled_err(y, numpy_forward(sd, [16, 12, 8], False, "silu", x)) < 1e-5
    (run / "config.yaml").unlink()
    from rollfit.cli.main import main
    assert main(["predict", "--run", str(run), "--input", str(tmp_path / "in.csv"),
                 "--csv", str(tmp_path / "o2.csv")]) == 2


def test_init_from_an_original_run_keeps_its_raw_convention(fixtures_dir, tmp_path):
    """Fine-tuning (``rollfit train --init-from``) starts from the original network exactly."""
    from rollfit.config import load_config
    from rollfit.pipeline.run import train

    cfg = load_config(None, ["trainer.max_epochs=1", "trainer.lr=1e-12", "trainer.progress=false",
                             "trainer.report=false", "data.cache=false"])
    cfg.data.hdf5_path = str(fixtures_dir / "rollouts" / "u225.h5")
    result = train(cfg, tmp_path / "ft", init_from=fixtures_dir / "reference_run")
    s = Surrogate.load(result.run_dir)
    ref = np.load(fixtures_dir / "reference_run" / "expected_predictions.npz")
    assert s.config["target_convention"] == "raw" and s.config["format_version"] >= 1
    assert s.config["activation"] == "gelu" and s.in_lbl == ["gait_cadence", "gait_stride"]
    assert rel_err(s.predict(ref["X"]), ref["Y"]) < 1e-5
