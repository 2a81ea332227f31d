"""Network layout (the original's state_dict names), units of ``forward`` and the forward Jacobian."""
import pytest
import torch

from rollfit.errors import ConfigError
from rollfit.model.network import RegressionNet, activation_derivative, make_activation

torch.set_default_dtype(torch.float32)


def _net(residual=True, layers=(64, 32), act="gelu", din=2, dout=1, dtype=torch.float64):
    torch.manual_seed(0)
    net = RegressionNet(din, dout, list(layers), input_mean=torch.rand(din), input_std=torch.rand(din) + 0.5,
                        target_mean=torch.rand(dout) * 10, target_std=torch.rand(dout) + 1, residual=residual,
                        activation=act, target_convention="normalized")
    return net.to(dtype)


def test_residual_state_dict_layout_matches_original():
    keys = set(_net(True, (64, 32)).state_dict())
    assert keys == {"input_mean", "input_std", "target_mean", "target_std",
                    "mlp.input_layer.weight", "mlp.input_layer.bias", "mlp.layers.0.weight", "mlp.layers.0.bias",
                    "mlp.skip_connections.0.weight", "mlp.skip_connections.0.bias",
                    "mlp.output_layer.weight", "mlp.output_layer.bias"}


def test_residual_equal_widths_use_identity_skip():
    keys = set(_net(True, (32, 32, 16)).state_dict())
    assert "mlp.skip_connections.0.weight" not in keys and "mlp.skip_connections.1.weight" in keys


def test_sequential_layout_and_tanh_after_last_hidden():
    net = _net(False, (64, 32, 16), act="relu")
    names = [n for n, _ in net.mlp.mlp.named_children()]
    assert names == ["input", "act0", "hidden1", "act1", "hidden2", "act2", "output"]
    assert (net.mlp.mlp.act0.name, net.mlp.mlp.act1.name, net.mlp.mlp.act2.name) == ("relu", "relu", "tanh")
    single = _net(False, (8,), act="silu")
    assert single.mlp.mlp.act0.name == "silu"


def test_residual_forward_matches_hand_computation():
    net = _net(True, (16, 8))
    x = torch.randn(5, 2, dtype=torch.float64)
    m = net.mlp
    xn = (x - net.input_mean) / net.input_std
    h = torch.nn.functional.gelu(m.input_layer(xn))
    h2 = m.layers[0](h) + m.skip_connections[0](h)  # no activation after the last hidden layer
    expected = m.output_layer(h2)
    torch.testing.assert_close(net.forward_normalized(x), expected)  # training units
    torch.testing.assert_close(net(x), expected * net.target_std + net.target_mean)  # original units
    torch.testing.assert_close(net(x, denormalize=True), expected * net.target_std + net.target_mean)


def test_forward_is_in_original_units_for_every_convention():
    """``model(x)``, as the original's snippet calls it, gives physical units for rollfit
    (normalized-target) weights and for the original's raw-target weights alike; only the
    original's ``denormalize=True`` scales raw-target outputs again, as its plots did."""
    net = _net(True, (8,))
    x = torch.randn(4, 2, dtype=torch.float64)
    mlp_out = net.forward_normalized(x)
    torch.testing.assert_close(net(x), mlp_out * net.target_std + net.target_mean)
    raw = _net(True, (8,))
    raw.target_convention = "raw"  # the original pipeline's runs: the MLP learned physical units
    torch.testing.assert_close(raw(x), raw.forward_normalized(x))
    torch.testing.assert_close(raw(x, denormalize=True), mlp_out * net.target_std + net.target_mean)
    xn = (x - net.input_mean) / net.input_std
    torch.testing.assert_close(net(xn, normalize=False), net(x))


def test_unknown_activation_is_an_error_not_gelu():
    with pytest.raises(ConfigError, match=r"model.activation: expected one of gelu, silu, relu, tanh, but got 'gelus'; did you mean 'gelu'\?"):
        make_activation("gelus")


def test_predict_honours_convention():
    net = _net(True, (8,))
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(net.predict(x.float()).double(), net(x), rtol=1e-5, atol=1e-5)
    want = net.forward_normalized(x) * net.target_std + net.target_mean
    torch.testing.assert_close(net(x), want)
    net.target_convention = "raw"
    torch.testing.assert_close(net.predict(x.float()).double(), net.forward_normalized(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["gelu", "silu", "relu", "tanh"])
def test_activation_derivative_matches_autograd(act):
    mod = make_activation(act)
    z = torch.linspace(-3, 3, 101, dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(mod(z).sum(), z)
    torch.testing.assert_close(activation_derivative(mod, z.detach()), g)


@pytest.mark.parametrize("residual,layers,act", [(True, (16, 8), "gelu"), (True, (8, 8, 4), "silu"),
                                                 (False, (16, 8), "tanh"), (False, (12,), "gelu"),
                                                 (True, (6,), "relu")])
def test_forward_jacobian_matches_autograd_and_finite_differences(residual, layers, act):
    net = _net(residual, layers, act, din=3, dout=2)
    x = torch.randn(7, 3, dtype=torch.float64)
    y, jac = net.forward_with_input_jacobian(x)
    torch.testing.assert_close(y, net.forward_normalized(x))  # training units
    auto = torch.autograd.functional.jacobian(lambda v: net.forward_normalized(v).sum(0), x).permute(1, 0, 2)
    torch.testing.assert_close(jac, auto)
    eps = 1e-6
    for j in range(3):
        dx = torch.zeros_like(x)
        dx[:, j] = eps
        fd = (net.forward_normalized(x + dx) - net.forward_normalized(x - dx)) / (2 * eps)
        torch.testing.assert_close(jac[:, :, j], fd, rtol=1e-5, atol=1e-6)


def test_seed_snippet_constructor_call_works():
    cfg = {"input_dim": 2, "output_dim": 1, "layers": [64, 32], "residual": True, "input_mean": [1.0, 1.0],
           "input_std": [0.1, 0.2], "target_mean": [60.0], "target_std": [9.0]}
    model = RegressionNet(input_dim=cfg["input_dim"], output_dim=cfg["output_dim"], layers=cfg["layers"],
                          input_mean=torch.tensor(cfg["input_mean"]), input_std=torch.tensor(cfg["input_std"]),
                          target_mean=torch.tensor(cfg["target_mean"]), target_std=torch.tensor(cfg["target_std"]),
                          residual=cfg["residual"])
    model.load_state_dict(model.state_dict())
    assert model.eval()(torch.ones(3, 2)).shape == (3, 1)


def test_seed_snippet_model_x_is_physical_for_original_and_rollfit_runs(fixtures_dir, trained_run):
    """The seed's loading snippet then ``model(x)``: the original's reference run (raw-target
    weights) and a rollfit run (trained on normalized targets, stored with the scaling folded
    into the output layer) both give original units, the numbers ``Surrogate.predict`` gives."""
    import numpy as np

    from rollfit.analysis.surrogate import Surrogate
    from rollfit.runs.checkpoint import list_checkpoints, load_model

    def snippet(path):  # the original's loading snippet, verbatim but for the path
        checkpoint = torch.load(path, weights_only=True)
        config = checkpoint["config"]
        model = RegressionNet(input_dim=config["input_dim"], output_dim=config["output_dim"], layers=config["layers"],
                              input_mean=torch.tensor(config["input_mean"]), input_std=torch.tensor(config["input_std"]),
                              target_mean=torch.tensor(config["target_mean"]),
                              target_std=torch.tensor(config["target_std"]), residual=config["residual"])
        model.load_state_dict(checkpoint["model_state_dict"])
        model.eval()
        return model, config

    ref = np.load(fixtures_dir / "reference_run" / "expected_predictions.npz")
    original, _, _ = load_model(fixtures_dir / "reference_run")
    as_snippet, _ = snippet(list_checkpoints(fixtures_dir / "reference_run")[-1])
    with torch.no_grad():
        np.testing.assert_allclose(original(torch.as_tensor(ref["X"])).numpy(), ref["Y"], rtol=1e-5)
        np.testing.assert_allclose(as_snippet(torch.as_tensor(ref["X"])).numpy(), ref["Y"], rtol=1e-5)
    newest = list_checkpoints(trained_run)[-1]
    model, config = snippet(newest)
    x = torch.tensor([[0.9, 1.0], [1.1, 1.05]])
    with torch.no_grad():  # the same checkpoint (a run folder loads best.ckpt when it has one)
        np.testing.assert_allclose(model(x).numpy(), Surrogate.load(newest).predict(x.numpy()), rtol=1e-6)
    best, _ = snippet(trained_run / "checkpoints" / "best.ckpt")
    with torch.no_grad():
        np.testing.assert_allclose(best(x).numpy(), Surrogate.load(trained_run).predict(x.numpy()), rtol=1e-6)
    assert config["resolved"]["engine"] == "eager" and config["resolved"]["torch"] == torch.__version__
