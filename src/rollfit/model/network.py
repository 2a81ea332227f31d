"""The surrogate network: residual or sequential MLPs with normalization built in.

The module and parameter names reproduce the original pipeline's state_dict layout
exactly (see the README, "for users of the original pipeline"), so its checkpoints load
into these classes and ours load into its code.

``RegressionNet.forward(x, normalize=True, denormalize=False)`` keeps the original meaning:
``mlp((x - input_mean) / input_std)``, times ``target_std`` plus ``target_mean`` only when
``denormalize``. Whether the network's raw output is in normalized target units (rollfit)
or in original units (the original pipeline, which trained on raw targets) is the model's
``target_convention``; ``predict`` honours it, so it always returns original units.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError, did_you_mean
from .kinds import KindSpec, no_std, register_kind
from .registry import ACTIVATIONS

CONVENTIONS = ("normalized", "raw")


class Act(nn.Module):
    """The activation named ``name`` in ``registry.ACTIVATIONS`` (no parameters, so the
    state_dict layout is the original's whatever the activation)."""

    def __init__(self, name: str):
        super().__init__()
        self.name, self.fn = name, ACTIVATIONS[name].value

    def forward(self, z: Tensor) -> Tensor:
        return self.fn(z)

    def extra_repr(self) -> str:
        return self.name


def make_activation(name: str) -> Act:
    """The activation module for a configured name; an unknown name is an error (not gelu)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"model.activation: expected one of {', '.join(ACTIVATIONS)}, but got '{name}'"
                          f"{did_you_mean(str(name), ACTIVATIONS)}")
    return Act(name)


def activation_derivative(act: Act, z: Tensor) -> Tensor:
    """d act(z) / dz from the registry (differentiable: torch's ops have derivatives)."""
    return ACTIVATIONS[act.name].parts(z, False)[1]


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _linear_tangent(layer: nn.Linear, t: Tensor) -> Tensor:
    """Push tangents t (B, D, in) through a Linear: (B, D, out) (no bias: it is constant)."""
    return t @ layer.weight.t()


def _act_tangent(act: Act, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Apply ``act`` to pre-activation z and carry tangents: J <- diag(act'(z)) J."""
    return act(z), t * activation_derivative(act, z).unsqueeze(1)


class ResidualMLP(nn.Module):
    """input_layer + act, then per hidden layer: h = layer(h) [+ act except last] + skip(h_prev)."""

    def __init__(self, input_dim: int, output_dim: int, layers: Sequence[int], activation: str = "gelu"):
        super().__init__()
        widths = list(layers)
        self.layers = nn.ModuleList(nn.Linear(widths[i - 1], widths[i]) for i in range(1, len(widths)))
        self.skip_connections = nn.ModuleList(
            nn.Identity() if widths[i - 1] == widths[i] else nn.Linear(widths[i - 1], widths[i])
            for i in range(1, len(widths)))
        self.input_layer = nn.Linear(input_dim, widths[0])
        self.output_layer = nn.Linear(widths[-1], output_dim)
        self.activation = make_activation(activation)
        _xavier(self)

    def forward(self, x: Tensor) -> Tensor:
        h = self.activation(self.input_layer(x))
        last = len(self.layers) - 1
        for i, (layer, skip) in enumerate(zip(self.layers, self.skip_connections)):
            z = layer(h)
            z = self.activation(z) if i < last else z
            h = z + skip(h)
        return self.output_layer(h)

    def forward_tangent(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Output and d output / d x applied to tangents t (B, D, input_dim) -> (B, D, output_dim)."""
        h, t = _act_tangent(self.activation, self.input_layer(x), _linear_tangent(self.input_layer, t))
        last = len(self.layers) - 1
        for i, (layer, skip) in enumerate(zip(self.layers, self.skip_connections)):
            z, tz = layer(h), _linear_tangent(layer, t)
            if i < last:
                z, tz = _act_tangent(self.activation, z, tz)
            ts = _linear_tangent(skip, t) if isinstance(skip, nn.Linear) else t
            h, t = z + skip(h), tz + ts
        return self.output_layer(h), _linear_tangent(self.output_layer, t)


class SequentialMLP(nn.Module):
    """nn.Sequential(input, act0, hidden1, act1, ..., output); the last hidden activation is
    Tanh when there are two or more hidden layers (as in the original pipeline)."""

    def __init__(self, input_dim: int, output_dim: int, layers: Sequence[int], activation: str = "gelu"):
        super().__init__()
        widths = list(layers)
        mods: list[tuple[str, nn.Module]] = [("input", nn.Linear(input_dim, widths[0])),
                                             ("act0", self._act(0, len(widths), activation))]
        for i in range(1, len(widths)):
            mods.append((f"hidden{i}", nn.Linear(widths[i - 1], widths[i])))
            mods.append((f"act{i}", self._act(i, len(widths), activation)))
        mods.append(("output", nn.Linear(widths[-1], output_dim)))
        self.mlp = nn.Sequential(OrderedDict(mods))
        _xavier(self)

    @staticmethod
    def _act(i: int, n: int, name: str) -> Act:
        return make_activation("tanh" if (n > 1 and i == n - 1) else name)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)

    def forward_tangent(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Output and d output / d x applied to tangents t (B, D, input_dim)."""
        h = x
        mods = list(self.mlp)
        for mod in mods:
            if isinstance(mod, nn.Linear):
                h, t = mod(h), _linear_tangent(mod, t)
            else:
                h, t = _act_tangent(mod, h, t)
        return h, t


class RegressionNet(nn.Module):
    """An MLP with input normalization and output denormalization as buffers.

    The original pipeline's loading snippet works as written. ``target_convention`` says
    what the MLP's own output means: ``"raw"`` (original units: the original pipeline's
    runs, and every checkpoint rollfit writes, whose stored weights have the target scaling
    folded into the output layer) or ``"normalized"`` (how rollfit trains: the losses
    compare with normalized targets). The default is ``"raw"``, so a network built from any
    checkpoint's config without naming a convention returns original units from ``model(x)``.
    """

    kind = "mlp"  # model/kinds.py: predict_std raises, naming the kinds that have an uncertainty

    def __init__(self, input_dim: int, output_dim: int, layers: Sequence[int],
                 input_mean: Tensor | None = None, input_std: Tensor | None = None,
                 target_mean: Tensor | None = None, target_std: Tensor | None = None,
                 residual: bool = True, activation: str = "gelu", target_convention: str = "raw"):
        super().__init__()
        if target_convention not in CONVENTIONS:
            raise ConfigError(f"target_convention: expected one of {CONVENTIONS}, but got '{target_convention}'")
        self.input_dim, self.output_dim, self.layers = int(input_dim), int(output_dim), list(layers)
        self.residual, self.activation, self.target_convention = bool(residual), activation, target_convention
        cls = ResidualMLP if residual else SequentialMLP
        self.mlp = cls(self.input_dim, self.output_dim, self.layers, activation)
        self.register_buffer("input_mean", _vec(input_mean, self.input_dim, 0.0))
        self.register_buffer("input_std", _vec(input_std, self.input_dim, 1.0))
        self.register_buffer("target_mean", _vec(target_mean, self.output_dim, 0.0))
        self.register_buffer("target_std", _vec(target_std, self.output_dim, 1.0))

    def forward(self, x: Tensor, normalize: bool = True, denormalize: bool = False) -> Tensor:
        """Outputs in ORIGINAL units for raw inputs, whatever ``target_convention`` the
        weights use (``normalize=False``: the inputs are already normalized).

        ``denormalize=True`` keeps the original's meaning, ``mlp(...) * target_std +
        target_mean``: the same as the default for rollfit runs, and for original runs the
        twice-scaled values its plotting code showed.
        """
        y = self.forward_normalized(x) if normalize else self.mlp(x)
        return y * self.target_std + self.target_mean if denormalize else self.to_units(y)

    def forward_normalized(self, x: Tensor) -> Tensor:
        """The MLP's own output for raw inputs, in training units (normalized targets for
        rollfit runs, raw for original runs): what the losses compare with the targets."""
        return self.mlp((x - self.input_mean) / self.input_std)

    def forward_with_input_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Network output (training units) and its Jacobian w.r.t. the RAW input, (B, K, D).

        Carried forward through the layers (J <- diag(act'(z)) W J), so training through it
        needs one backward pass, not a double backward: cheaper, and torch.compile and DDP
        support it.
        """
        xn = (x - self.input_mean) / self.input_std
        eye = torch.diag(1.0 / self.input_std).to(x.dtype)
        t = eye.unsqueeze(0).expand(x.shape[0], -1, -1)
        y, t = self.mlp.forward_tangent(xn, t)
        return y, t.transpose(1, 2)

    def to_units(self, y: Tensor) -> Tensor:
        """Network output -> original units, according to ``target_convention``."""
        return y * self.target_std + self.target_mean if self.target_convention == "normalized" else y

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Raw inputs -> outputs in original units (whatever convention the weights use)."""
        x = torch.as_tensor(x, dtype=self.input_mean.dtype, device=self.input_mean.device)
        return self.forward(x)

    @torch.no_grad()
    def units_state_dict(self) -> dict[str, Tensor]:
        """The state_dict with the target scaling folded into the output layer, so that the
        MLP itself returns original units (the ``raw`` convention of the original pipeline).

        Checkpoints store these weights: the original's loading snippet and its ``model(x)``
        then give original units for rollfit runs too, and ``RegressionNet(...)`` built with
        ``target_convention="raw"`` from the checkpoint's config gives the same numbers.
        """
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        if self.target_convention == "raw":
            return state
        prefix = "mlp.output_layer." if self.residual else "mlp.mlp.output."
        std, mean = self.target_std, self.target_mean
        state[prefix + "weight"] = state[prefix + "weight"] * std[:, None]
        state[prefix + "bias"] = state[prefix + "bias"] * std + mean
        return state

    predict_std = no_std("mlp")

    def export_module(self) -> nn.Module:
        """A plain module of the outputs in original units for ONNX and pt2: this network,
        whose ``forward(x)`` already returns them."""
        return self

    def constructor_args(self) -> dict:
        """Plain-typed arguments that rebuild this network (stored in checkpoints)."""
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, "layers": list(self.layers),
                "residual": self.residual, "activation": self.activation,
                "target_convention": self.target_convention,
                **{k: getattr(self, k).detach().cpu().tolist()
                   for k in ("input_mean", "input_std", "target_mean", "target_std")}}


def build_from_config(cfg: dict) -> RegressionNet:
    """A ``RegressionNet`` from a checkpoint's completed config (``runs.checkpoint.model_config``)."""
    return RegressionNet(
        input_dim=cfg["input_dim"], output_dim=cfg["output_dim"], layers=cfg["layers"],
        input_mean=torch.tensor(cfg["input_mean"]), input_std=torch.tensor(cfg["input_std"]),
        target_mean=torch.tensor(cfg["target_mean"]), target_std=torch.tensor(cfg["target_std"]),
        residual=cfg["residual"], activation=cfg["activation"], target_convention=cfg["target_convention"])


register_kind(KindSpec("mlp", build_from_config, has_std=False, resumable=True, exports=("onnx", "pt2", "c"),
                       summary="one network (the original pipeline's model)"))


def _vec(value: Tensor | Sequence[float] | None, n: int, fill: float) -> Tensor:
    if value is None:
        return torch.full((n,), fill, dtype=torch.float32)
    v = torch.as_tensor(value, dtype=torch.float32).reshape(-1).clone()
    if v.numel() != n:
        raise ConfigError(f"normalization vector: expected {n} values, but got {v.numel()}")
    return v
