"""A trained model as a BoTorch model, so BoTorch's acquisition functions can use it (``suggest``).

Each kind with an uncertainty has one adapter in ``ADAPTERS`` (no branch per kind elsewhere):

- ``gp``, ``robust_gp``: the kind's own fitted BoTorch model (``botorch_model()``), in raw
  input space, used as it is (``can_fantasize`` says whether it can be conditioned on new
  points, which integrated-variance acquisition needs);
- ``ensemble``: ``MembersEnsemble``, a ``botorch.models.ensemble.EnsembleModel`` whose
  posterior is the members' predictions (``members_forward``), so Monte-Carlo acquisition
  functions sample by picking members.

A kind without an adapter is refused with ``require_std``'s one line when it has no
uncertainty (``mlp``), otherwise with a line naming the kinds that have an adapter.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from botorch.models.ensemble import EnsembleModel
from botorch.models.model import Model
from torch import Tensor, nn

from ..errors import ConfigError
from ..model.kinds import require_std


class MembersEnsemble(EnsembleModel):
    """An ensemble network (``members_forward(x) -> (K, N, out)`` in original units) as a
    BoTorch ``EnsembleModel``: the posterior at ``X`` holds the K members' predictions.

    The network is copied and moved to float64 (BoTorch's optimizers work in float64); its
    parameters are frozen, only the inputs carry gradients.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(net).to(torch.float64).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._num_outputs = int(net.output_dim)

    def forward(self, X: Tensor) -> Tensor:
        """``batch x n x d`` inputs -> ``batch x s x n x m`` member outputs."""
        batch, d = X.shape[:-2], X.shape[-1]
        members = self.net.members_forward(X.reshape(-1, d).to(torch.float64))  # (s, B*n, m)
        s, m = members.shape[0], members.shape[-1]
        out = members.reshape(s, *batch, X.shape[-2], m)
        return out.movedim(0, -3)


def _fitted_gp(module: nn.Module) -> Model:
    """GP kinds keep the fitted BoTorch model; it takes raw inputs."""
    return module.botorch_model().eval()


def _ensemble(module: nn.Module) -> Model:
    return MembersEnsemble(module)


ADAPTERS: dict[str, Callable[[nn.Module], Model]] = {
    "gp": _fitted_gp,
    "robust_gp": _fitted_gp,
    "ensemble": _ensemble,
}


def botorch_model(module: nn.Module) -> Model:
    """The BoTorch model of a trained model (a ``Predictor``), in raw input space, float64."""
    kind = str(getattr(module, "kind", "mlp"))
    adapter = ADAPTERS.get(kind)
    if adapter is None:
        require_std(kind, "an uncertainty (suggest chooses points by it)")
        raise ConfigError(f"model kind '{kind}': expected one of {', '.join(sorted(ADAPTERS))} for suggest, "
                          f"but '{kind}' has no BoTorch model")
    return adapter(module)


def is_ensemble(model: Model) -> bool:
    """True for the ensemble adapter (its posterior is sampled by picking members)."""
    return isinstance(model, EnsembleModel)


def can_fantasize(model: Model) -> bool:
    """True when the model's posterior can be conditioned on new points (an exact GP), which
    integrated-variance acquisition needs. An ensemble cannot be; BoTorch's robust
    relevance-pursuit GP cannot be copied for it (its likelihood holds non-leaf tensors, and
    the failed copy leaves the model without its likelihood, so it is not tried)."""
    from botorch.models.robust_relevance_pursuit_model import RobustRelevancePursuitMixin

    parts = list(getattr(model, "models", [model]))  # a ModelListGP: every output's model
    return not any(is_ensemble(m) or isinstance(m, RobustRelevancePursuitMixin) for m in parts)
