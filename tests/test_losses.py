"""Each reconstruction loss against its formula and by finite differences; the penalties."""
import math

import pytest
import torch

from rollfit.errors import ConfigError
from rollfit.model import losses
from rollfit.model.network import RegressionNet
from rollfit.model.registry import LOSSES

R = torch.tensor([-5.0, -1.3, -0.4, 0.0, 0.2, 0.9, 2.5, 7.0], dtype=torch.float64)


def _formula(kind, r, delta):
    d = delta * {"mse": 1, "huber": 1, "cauchy": 1.2, "welsch": 1.8, "geman": 1.2, "tukey": 3.5}[kind]
    vals = []
    for v in r.tolist():
        if kind == "mse":
            vals.append(v * v)
        elif kind == "huber":
            vals.append(0.5 * v * v if abs(v) <= d else d * (abs(v) - 0.5 * d))
        elif kind == "cauchy":
            vals.append(0.5 * d * d * math.log1p((v / d) ** 2))
        elif kind == "welsch":
            vals.append(0.5 * d * d * (1 - math.exp(-((v / d) ** 2))))
        elif kind == "geman":
            vals.append(0.5 * v * v / (1 + (v / d) ** 2))
        elif kind == "tukey":
            vals.append(d * d / 6 * (1 - (1 - (v / d) ** 2) ** 3) if abs(v) <= d else d * d / 6)
    return sum(vals) / len(vals)


@pytest.mark.parametrize("kind", list(LOSSES))
@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_loss_matches_formula(kind, delta):
    got = losses.reconstruction_loss(R, torch.zeros_like(R), kind, delta)
    assert got.item() == pytest.approx(_formula(kind, R, delta), rel=1e-12)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_loss_gradient_matches_finite_differences(kind):
    pred = (R * 0.7 + 0.013).clone().requires_grad_(True)  # avoid the kinks of huber/tukey
    target = torch.zeros_like(R)
    assert torch.autograd.gradcheck(lambda p: losses.reconstruction_loss(p, target, kind, 1.0), (pred,))


@pytest.mark.parametrize("kind", list(LOSSES))
def test_registered_derivative_is_the_gradient_of_the_value(kind):
    """The fused step uses ``grad`` (per element, before the mean's 1/n) instead of autograd."""
    loss = LOSSES[kind]
    r = (R * 0.7 + 0.013).clone().requires_grad_(True)
    d = 1.3 * loss.delta_scale
    (g,) = torch.autograd.grad(loss.value(r, d), r)
    torch.testing.assert_close(loss.grad(r.detach(), d) / r.numel(), g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["geman", "welsch", "tukey"])
def test_non_convex_losses_warm_start_with_huber(kind):
    before = losses.reconstruction_loss(R, torch.zeros_like(R), kind, 1.0, epoch=3, start_epoch=10)
    after = losses.reconstruction_loss(R, torch.zeros_like(R), kind, 1.0, epoch=10, start_epoch=10)
    assert before.item() == pytest.approx(_formula("huber", R, 1.0))
    assert after.item() == pytest.approx(_formula(kind, R, 1.0))


def test_unknown_loss_names_the_key():
    with pytest.raises(ConfigError, match=r"trainer.recon_type: expected one of mse, huber, cauchy, welsch, geman, "
                                          r"tukey, but got 'hubber'; did you mean 'huber'\?"):
        losses.reconstruction_loss(R, R, "hubber")


def test_l1_l2_are_sums_of_per_tensor_means():
    a, b = torch.tensor([[1.0, -3.0]]), torch.tensor([2.0, 0.0, -1.0])
    assert losses.l1_penalty([a, b]).item() == pytest.approx(2.0 + 1.0)
    assert losses.l2_penalty([a, b]).item() == pytest.approx(5.0 + 5.0 / 3)


def test_grad_penalty_jacobian_equals_double_backward_value_and_gradient():
    torch.manual_seed(1)
    net = RegressionNet(3, 2, [16, 8], input_mean=torch.rand(3), input_std=torch.rand(3) + 0.3).double()
    x = torch.randn(9, 3, dtype=torch.float64)
    _, jac = net.forward_with_input_jacobian(x)
    gp_fwd = losses.grad_penalty(jac.sum(1))
    xr = x.clone().requires_grad_(True)
    gp_dbl = losses.grad_penalty_double_backward(net.forward_normalized(xr), xr)
    assert gp_fwd.item() == pytest.approx(gp_dbl.item(), rel=1e-10)
    params = list(net.parameters())
    g_fwd = torch.autograd.grad(gp_fwd, params, allow_unused=True, materialize_grads=True)
    g_dbl = torch.autograd.grad(gp_dbl, params, allow_unused=True, materialize_grads=True)
    for a, b in zip(g_fwd, g_dbl):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_grad_penalty_clamps_each_input_gradient():
    g = torch.tensor([[2000.0, -3.0]])
    assert losses.grad_penalty(g).item() == pytest.approx(1e6 + 9.0)


def test_normalized_grad_space_differentiates_by_normalized_inputs():
    torch.manual_seed(2)
    std = torch.tensor([0.15, 3.0], dtype=torch.float64)
    net = RegressionNet(2, 1, [8, 4], input_mean=torch.tensor([1.0, 5.0]), input_std=std).double()
    x = torch.randn(6, 2, dtype=torch.float64) * std + torch.tensor([1.0, 5.0], dtype=torch.float64)
    _, jac = net.forward_with_input_jacobian(x)
    got = losses.grad_penalty(jac.sum(1), losses.gp_input_scale(net.input_std, "normalized"))
    xn = ((x - net.input_mean) / net.input_std).requires_grad_(True)
    (g,) = torch.autograd.grad(net.mlp(xn).sum(), xn)
    assert got.item() == pytest.approx(g.square().sum(-1).mean().item(), rel=1e-10)
    assert losses.gp_input_scale(net.input_std, "raw") is None
