"""The ``ensemble`` kind: K MLPs trained together as ONE batched network, mean and std across them.

``EnsembleNet`` holds K copies of the configured MLP (``model.members``; residual or
sequential, activation from the registry) with every weight stacked along a leading member
dimension: a Linear is ``weight (K, out, in)``, ``bias (K, out)``, so one forward pass is a
handful of batched matrix products whatever K is, and the fused training step
(``training/fastpath.py``) runs unchanged on it (its math is rank-polymorphic). The
parameter names follow ``RegressionNet``'s (``mlp.input_layer.weight`` ...), with the
member dimension in front.

Members differ by their random initialization (the run's seed) and, with
``model.bootstrap``, by the rows they see: member k trains on its own resample of the
training rows (``bootstrap_rows``, seeded by ``bootstrap_seed``), which weighs each row by
how often it was drawn, in every loss term (``bootstrap_weights``: the engines weigh the
original rows instead of gathering the resample, so one forward pass of the rows serves
every member's training step and the validation score, out-of-bag rows included).

Uncertainty: the spread of the members (their standard deviation) under-covers held-out
errors, so it is calibrated after training: per output, ``std = sqrt((std_scale *
spread)^2 + noise_std^2)`` with ``std_scale`` and ``noise_std`` maximizing the Gaussian
likelihood of held-out residuals (``fit_calibration``). Which rows were used is recorded
in ``calibration`` (stored in the checkpoint's config):

- ``validation rows`` when ``data.train_split < 1`` (rows no member trained on);
- ``out-of-bag rows`` with ``model.bootstrap`` and no validation split: each training row
  predicted by the members whose resample missed it;
- ``training rows`` otherwise: only ``noise_std`` is fitted there (training residuals
  understate errors), ``std_scale`` stays 1, so the intervals are the members' spread plus
  the training noise; set ``data.train_split < 1`` or ``model.bootstrap: true`` for
  calibrated intervals.

The training engines give the model its calibration rows (``set_calibration_rows``) and
``units_state_dict`` (what a checkpoint stores) calibrates at the weights being saved.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .kinds import KindSpec, as_input, register_kind
from .network import CONVENTIONS, _vec, make_activation

CALIBRATION_MAX_ROWS = 2048  # calibration fits 2 numbers per output (at every checkpoint): a seeded subsample suffices
UNCALIBRATED = "none (not trained by rollfit yet)"


class StackedLinear(nn.Module):
    """K Linear layers as one: ``weight (K, out, in)``, ``bias (K, out)``.

    ``forward(h)``: h (N, in) shared by all members, or (K, N, in) per member -> (K, N, out).
    Initialized like ``RegressionNet`` (xavier-uniform weights, zero biases), each member
    with its own draw.
    """

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(members, out_features))
        bound = math.sqrt(6.0 / (in_features + out_features))
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)

    def forward(self, h: Tensor) -> Tensor:
        return torch.matmul(h, self.weight.transpose(-1, -2)) + self.bias.unsqueeze(-2)

    def extra_repr(self) -> str:
        return f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}"


class StackedResidualMLP(nn.Module):
    """``ResidualMLP`` with a member dimension: same blocks, same names, stacked weights."""

    def __init__(self, members: int, input_dim: int, output_dim: int, layers: Sequence[int], activation: str):
        super().__init__()
        w = list(layers)
        self.layers = nn.ModuleList(StackedLinear(members, w[i - 1], w[i]) for i in range(1, len(w)))
        self.skip_connections = nn.ModuleList(
            nn.Identity() if w[i - 1] == w[i] else StackedLinear(members, w[i - 1], w[i]) for i in range(1, len(w)))
        self.input_layer = StackedLinear(members, input_dim, w[0])
        self.output_layer = StackedLinear(members, w[-1], output_dim)
        self.activation = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        h = self.activation(self.input_layer(x))
        last = len(self.layers) - 1
        for i, (layer, skip) in enumerate(zip(self.layers, self.skip_connections)):
            z = layer(h)
            h = (self.activation(z) if i < last else z) + skip(h)
        return self.output_layer(h)


class StackedSequentialMLP(nn.Module):
    """``SequentialMLP`` with a member dimension (the last hidden activation is tanh from two
    hidden layers on, as in the original pipeline)."""

    def __init__(self, members: int, input_dim: int, output_dim: int, layers: Sequence[int], activation: str):
        super().__init__()
        w, n = list(layers), len(layers)
        act = lambda i: make_activation("tanh" if (n > 1 and i == n - 1) else activation)  # noqa: E731
        mods: list[tuple[str, nn.Module]] = [("input", StackedLinear(members, input_dim, w[0])), ("act0", act(0))]
        for i in range(1, n):
            mods += [(f"hidden{i}", StackedLinear(members, w[i - 1], w[i])), (f"act{i}", act(i))]
        mods.append(("output", StackedLinear(members, w[-1], output_dim)))
        from collections import OrderedDict

        self.mlp = nn.Sequential(OrderedDict(mods))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class EnsembleNet(nn.Module):
    """K MLPs as one batched network, normalization inside; mean and calibrated std.

    The same face as ``RegressionNet`` to the trainer (``forward_normalized``,
    ``units_state_dict``, ``target_convention``, the normalization buffers) and the
    ``Predictor`` protocol to everything else. ``forward_normalized`` returns every member's
    output, (K, N, out); ``forward`` the members' mean in original units.
    """

    kind = "ensemble"

    def __init__(self, input_dim: int, output_dim: int, layers: Sequence[int], members: int = 8,
                 input_mean: Tensor | None = None, input_std: Tensor | None = None,
                 target_mean: Tensor | None = None, target_std: Tensor | None = None,
                 residual: bool = True, activation: str = "gelu", target_convention: str = "raw",
                 bootstrap: bool = False, bootstrap_seed: int = 0, calibration: str = UNCALIBRATED):
        super().__init__()
        if target_convention not in CONVENTIONS:
            raise ConfigError(f"target_convention: expected one of {CONVENTIONS}, but got '{target_convention}'")
        if int(members) < 2:
            raise ConfigError(f"model.members: expected at least 2 networks in an ensemble, but got {members}")
        self.input_dim, self.output_dim, self.layers = int(input_dim), int(output_dim), list(layers)
        self.members, self.residual, self.activation = int(members), bool(residual), activation
        self.target_convention, self.bootstrap, self.bootstrap_seed = target_convention, bool(bootstrap), int(bootstrap_seed)
        self.calibration = calibration
        cls = StackedResidualMLP if residual else StackedSequentialMLP
        self.mlp = cls(self.members, self.input_dim, self.output_dim, self.layers, activation)
        self.register_buffer("input_mean", _vec(input_mean, self.input_dim, 0.0))
        self.register_buffer("input_std", _vec(input_std, self.input_dim, 1.0))
        self.register_buffer("target_mean", _vec(target_mean, self.output_dim, 0.0))
        self.register_buffer("target_std", _vec(target_std, self.output_dim, 1.0))
        self.register_buffer("std_scale", torch.ones(self.output_dim))
        self.register_buffer("noise_std", torch.zeros(self.output_dim))
        self._calibration_rows: Optional[tuple[Tensor, Tensor, str, Optional[Tensor]]] = None

    # ---- outputs -----------------------------------------------------------------------------
    def forward_normalized(self, x: Tensor) -> Tensor:
        """Every member's output in training units, (K, N, out), for raw inputs x (N, D) shared
        by the members or (K, N, D) one set per member (the autograd penalty's per-member
        input gradients)."""
        return self.mlp((x - self.input_mean) / self.input_std)

    def to_units(self, y: Tensor) -> Tensor:
        """Network output -> original units, according to ``target_convention``."""
        return y * self.target_std + self.target_mean if self.target_convention == "normalized" else y

    def members_forward(self, x: Tensor) -> Tensor:
        """Every member's prediction in original units, (K, N, out); differentiable."""
        return self.to_units(self.forward_normalized(x))

    def forward(self, x: Tensor) -> Tensor:
        """The ensemble mean in original units, (N, out); differentiable in x and dtype-agnostic."""
        return self.members_forward(x).mean(0)

    @torch.no_grad()
    def predict(self, x: Any) -> Tensor:
        """Raw inputs -> mean outputs in original units."""
        return self.forward(as_input(self, x))

    def predict_std(self, x: Any) -> tuple[Tensor, Tensor]:
        """(mean, std), both (N, out) in original units; std is a new observation's: the
        calibrated member spread plus the noise (see the module doc). Differentiable in x."""
        ys = self.members_forward(as_input(self, x))
        mean = ys.mean(0)
        spread_var = (ys - mean).square().sum(0) / (self.members - 1)
        var = spread_var * self.std_scale.square() + self.noise_std.square()
        return mean, var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()

    def forward_with_input_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean output (training units) and its Jacobian w.r.t. the raw input, (N, out, D)."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = self.forward_normalized(x).mean(0)
            rows = [torch.autograd.grad(y[:, k].sum(), x, retain_graph=k + 1 < y.shape[1])[0]
                    for k in range(y.shape[1])]
        return y.detach(), torch.stack(rows, dim=1)

    def export_module(self) -> nn.Module:
        """A plain module computing the mean in original units (what ONNX and pt2 export)."""
        return _MeanModule(self)

    # ---- training support ----------------------------------------------------------------------
    def bootstrap_rows(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """(K, n) row indices: member k's resample of n training rows (seeded, so a resumed
        run draws the same ones)."""
        gen = torch.Generator().manual_seed(self.bootstrap_seed)
        return torch.randint(n, (self.members, n), generator=gen).to(device)

    def bootstrap_weights(self, n: int, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32) -> Tensor:
        """(K, n, 1) how often member k's resample (``bootstrap_rows``) drew each row: weighing
        row i's loss terms by it is training on the resample (each member's weights sum to n)."""
        idx = self.bootstrap_rows(n)
        counts = torch.zeros(self.members, n, dtype=dtype).scatter_add_(1, idx, torch.ones(idx.shape, dtype=dtype))
        return counts.unsqueeze(-1).to(device)

    def set_calibration_rows(self, x: Tensor, y: Tensor, source: str, out_of_bag: Optional[Tensor] = None) -> None:
        """Rows to calibrate the std on when a checkpoint is written: raw inputs x (N, D),
        targets y (N, out) in original units, what they are (``source``) and, for
        ``out-of-bag rows``, a (K, N) mask of the members that did not train on each row."""
        self._calibration_rows = (x, y, source, out_of_bag)

    @torch.no_grad()
    def calibrate(self) -> None:
        """Fit ``std_scale`` and ``noise_std`` to the calibration rows at the current weights."""
        if self._calibration_rows is None:
            return
        x, y, source, oob = self._calibration_rows
        if x.shape[0] > CALIBRATION_MAX_ROWS:
            pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:CALIBRATION_MAX_ROWS]
            x, y, oob = x[pick.to(x.device)], y[pick.to(y.device)], None if oob is None else oob[:, pick.to(oob.device)]
        ys = self.members_forward(x)
        scale, noise, rows = fit_calibration(ys, y.to(ys.dtype), oob, fit_scale=source != "training rows")
        self.std_scale.copy_(scale)
        self.noise_std.copy_(noise)
        self.calibration = f"{source} ({rows} rows)"

    @torch.no_grad()
    def units_state_dict(self) -> dict[str, Tensor]:
        """The state_dict with the target scaling folded into each member's output layer (the
        ``raw`` convention checkpoints store), after calibrating the std at these weights."""
        self.calibrate()
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        if self.target_convention == "raw":
            return state
        prefix = "mlp.output_layer." if self.residual else "mlp.mlp.output."
        std, mean = self.target_std, self.target_mean
        state[prefix + "weight"] = state[prefix + "weight"] * std[None, :, None]
        state[prefix + "bias"] = state[prefix + "bias"] * std + mean
        return state

    def constructor_args(self) -> dict:
        """Plain-typed arguments that rebuild this ensemble (stored in checkpoints, with its ``kind``)."""
        return {"kind": self.kind, "input_dim": self.input_dim, "output_dim": self.output_dim, "layers": list(self.layers),
                "members": self.members, "residual": self.residual, "activation": self.activation,
                "target_convention": self.target_convention, "bootstrap": self.bootstrap,
                "bootstrap_seed": self.bootstrap_seed, "calibration": self.calibration,
                **{k: getattr(self, k).detach().cpu().tolist()
                   for k in ("input_mean", "input_std", "target_mean", "target_std")}}


class _MeanModule(nn.Module):
    """The ensemble's mean in original units as a plain module (exports trace this)."""

    def __init__(self, net: EnsembleNet):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def fit_calibration(ys: Tensor, y: Tensor, out_of_bag: Optional[Tensor] = None,
                    fit_scale: bool = True) -> tuple[Tensor, Tensor, int]:
    """(std_scale, noise_std, rows used) per output maximizing the Gaussian likelihood of the
    residuals of held-out rows.

    ``ys``: (K, N, out) member predictions, ``y``: (N, out) targets (same units). With
    ``out_of_bag`` (K, N) only the members marked for a row predict it (rows with fewer than
    two such members are left out). The variance model is ``a * spread^2 + b`` with a, b >= 0;
    the negative log likelihood is minimized on a log-spaced grid of a (times the ratio of
    mean squared residual to mean spread^2) and b (times the mean squared residual), b = 0
    included. ``fit_scale=False`` keeps a = 1 and fits b only.
    """
    if out_of_bag is None:
        mask = torch.ones(ys.shape[:2], dtype=ys.dtype, device=ys.device)
    else:
        mask = out_of_bag.to(ys.dtype)
    count = mask.sum(0)
    keep = count >= 2
    m, c = mask[:, keep].unsqueeze(-1), count[keep].unsqueeze(-1)
    ys, y = ys[:, keep], y[keep]
    out = y.shape[-1]
    if y.shape[0] < 2:
        return torch.ones(out, dtype=ys.dtype), torch.zeros(out, dtype=ys.dtype), int(y.shape[0])
    mean = (ys * m).sum(0) / c
    spread2 = ((ys - mean).square() * m).sum(0) / (c - 1)        # (N, out)
    r2 = (y - mean).square()
    ms_r = r2.mean(0).clamp_min(1e-300)                            # (out,)
    ms_s = spread2.mean(0).clamp_min(1e-300)
    grid = torch.logspace(-3.0, 3.0, 121, dtype=ys.dtype, device=ys.device)
    a = (grid[:, None] * (ms_r / ms_s)) if fit_scale else torch.ones(1, out, dtype=ys.dtype, device=ys.device)
    b = torch.cat([torch.zeros(1, out, dtype=ys.dtype, device=ys.device), grid[::2, None] * ms_r])
    nll = torch.stack([_gaussian_nll(ai * spread2 + b[:, None, :], r2) for ai in a])  # (A, B, out)
    flat = nll.reshape(-1, out).argmin(0)
    ia, ib = flat // b.shape[0], flat % b.shape[0]
    cols = torch.arange(out, device=ys.device)
    return a[ia, cols].sqrt().cpu(), b[ib, cols].sqrt().cpu(), int(y.shape[0])


def _gaussian_nll(var: Tensor, r2: Tensor) -> Tensor:
    """Mean over rows of log(var) + r^2 / var (twice the Gaussian NLL less a constant): (B, out)."""
    var = var.clamp_min(1e-300)
    return (var.log() + r2 / var).mean(-2)


def build_from_config(cfg: dict) -> EnsembleNet:
    """An ``EnsembleNet`` from a checkpoint's completed config (weights not loaded)."""
    t = torch.tensor
    return EnsembleNet(cfg["input_dim"], cfg["output_dim"], cfg["layers"], members=cfg["members"],
                       input_mean=t(cfg["input_mean"]), input_std=t(cfg["input_std"]),
                       target_mean=t(cfg["target_mean"]), target_std=t(cfg["target_std"]),
                       residual=cfg["residual"], activation=cfg["activation"],
                       target_convention=cfg["target_convention"], bootstrap=cfg.get("bootstrap", False),
                       bootstrap_seed=cfg.get("bootstrap_seed", 0), calibration=cfg.get("calibration", UNCALIBRATED))


register_kind(KindSpec("ensemble", build_from_config, has_std=True, resumable=True, exports=("onnx", "pt2", "c"),
                       summary="model.members networks trained together as one batched network; mean and "
                               "calibrated std across them"))
