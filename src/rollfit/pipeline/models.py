"""Fresh networks for the network kinds, with the data's normalization statistics inside."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import Config
from ..data.datamodule import HDF5DataModule
from ..model.network import RegressionNet


def build_mlp(cfg: Config, data: HDF5DataModule) -> RegressionNet:
    """A fresh ``RegressionNet`` (``model.kind: mlp``), trained in normalized target units."""
    t = torch.tensor
    return RegressionNet(len(cfg.data.in_lbl), len(cfg.data.out_lbl), cfg.model.layers,
                         input_mean=t(data.input_mean), input_std=t(data.input_std),
                         target_mean=t(data.target_mean), target_std=t(data.target_std),
                         residual=cfg.model.residual, activation=cfg.model.activation,
                         target_convention="normalized")


# kind -> builder of a fresh network (the ensemble kind adds its entry in model/ensemble.py's terms)
NEW_MODELS: dict[str, Callable[[Config, HDF5DataModule], nn.Module]] = {"mlp": build_mlp}


def new_model(cfg: Config, data: HDF5DataModule) -> nn.Module:
    """A fresh network of ``cfg.model.kind``."""
    return NEW_MODELS[cfg.model.kind](cfg, data)
