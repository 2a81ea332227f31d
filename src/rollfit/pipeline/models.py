"""Fresh networks for the network kinds, with the data's normalization statistics inside."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import Config
from ..data.datamodule import HDF5DataModule
from ..model.ensemble import EnsembleNet
from ..model.network import RegressionNet


def _stats(data: HDF5DataModule) -> dict[str, torch.Tensor]:
    t = torch.tensor
    return {"input_mean": t(data.input_mean), "input_std": t(data.input_std),
            "target_mean": t(data.target_mean), "target_std": t(data.target_std)}


def build_mlp(cfg: Config, data: HDF5DataModule) -> RegressionNet:
    """A fresh ``RegressionNet`` (``model.kind: mlp``), trained in normalized target units."""
    return RegressionNet(len(cfg.data.in_lbl), len(cfg.data.out_lbl), cfg.model.layers, **_stats(data),
                         residual=cfg.model.residual, activation=cfg.model.activation,
                         target_convention="normalized")


def build_ensemble(cfg: Config, data: HDF5DataModule) -> EnsembleNet:
    """A fresh ``EnsembleNet`` (``model.kind: ensemble``): ``model.members`` networks of the
    configured architecture, each initialized from the seeded RNG (so each differently);
    with ``model.bootstrap`` their resamples are drawn from ``trainer.seed``."""
    m = cfg.model
    return EnsembleNet(len(cfg.data.in_lbl), len(cfg.data.out_lbl), m.layers, members=m.members, **_stats(data),
                       residual=m.residual, activation=m.activation, target_convention="normalized",
                       bootstrap=m.bootstrap, bootstrap_seed=cfg.trainer.seed)


# kind -> builder of a fresh network
NEW_MODELS: dict[str, Callable[[Config, HDF5DataModule], nn.Module]] = {"mlp": build_mlp, "ensemble": build_ensemble}


def new_model(cfg: Config, data: HDF5DataModule) -> nn.Module:
    """A fresh network of ``cfg.model.kind``."""
    return NEW_MODELS[cfg.model.kind](cfg, data)
