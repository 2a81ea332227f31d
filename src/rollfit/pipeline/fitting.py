"""How each model kind is fitted: one entry per kind, so the pipeline has no branch per kind.

``make_fitter`` returns an object with the ``Fitter`` protocol for the run's ``model.kind``.
The pipeline (``run._execute``) calls only that protocol: ``fit()`` writes the run's
checkpoints into the folder and returns the last metrics. The network kinds (``mlp``,
``ensemble``) are trained epoch by epoch by ``training.Trainer``; the Gaussian-process kinds
are fitted by maximizing their marginal likelihood (``training.gp_fit``); ``auto`` compares
candidate kinds by cross-validation and fits the best (``pipeline.auto``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from ..config import Config
from ..data.datamodule import HDF5DataModule
from ..data.table import RolloutTable
from ..errors import ConfigError
from ..model.kinds import kind_spec, kinds_with
from ..runs.folder import RunFolder
from ..training.logger import SimpleLogger


class Fitter(Protocol):
    """What the pipeline needs of a kind's fitting."""

    start_epoch: int                 # > 0 when a resumed run continues (network kinds)
    last_checkpoint: Optional[Path]  # the newest checkpoint written (or resumed from)

    def fit(self) -> dict[str, float]: ...


@dataclass
class FitContext:
    """Everything a fitter may use; each kind takes what it needs."""

    cfg: Config
    table: RolloutTable
    data: HDF5DataModule
    folder: RunFolder
    logger: SimpleLogger
    meta: dict[str, Any]                   # checkpoint metadata (labels, bounds, run config)
    on_log: Optional[Callable[[int, dict[str, float]], None]]
    strategy: Any                          # distributed.Local or DistContext
    model: Any = None                      # fine-tuning / resume: the network to continue from
    ckpt: Optional[dict[str, Any]] = None  # resume: the checkpoint
    ckpt_path: Optional[Path] = None


# kind -> "module:function" building its Fitter from a FitContext (imported when used, so that
# BoTorch is imported only by runs that fit a GP)
FITTERS: dict[str, str] = {
    "mlp": "rollfit.pipeline.fitting:network_fitter",
    "ensemble": "rollfit.pipeline.fitting:network_fitter",
    "gp": "rollfit.training.gp_fit:gp_fitter",
    "robust_gp": "rollfit.training.gp_fit:gp_fitter",
    "auto": "rollfit.pipeline.auto:auto_fitter",
}


def make_fitter(ctx: FitContext) -> Fitter:
    """The fitter of ``ctx.cfg.model.kind``; resuming a kind that cannot resume is an error."""
    kind = ctx.cfg.model.kind
    if ctx.ckpt is not None and kind != "auto" and not kind_spec(kind).resumable:
        raise ConfigError(f"--resume: expected a run of a kind that trains in epochs ({', '.join(kinds_with('resumable'))}), "
                          f"but this run is '{kind}', which is fitted in one go; train it again instead")
    module, _, name = FITTERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)(ctx)


def network_fitter(ctx: FitContext):
    """``mlp`` and ``ensemble``: the epoch trainer, on a fresh network or the one to continue."""
    from ..training.trainer import Trainer
    from .models import new_model

    model = ctx.model if ctx.model is not None else new_model(ctx.cfg, ctx.data)
    trainer = Trainer(model.train(), ctx.cfg.trainer, ctx.data, ctx.folder.root, ctx.logger, ctx.meta,
                      on_log=ctx.on_log, dist=ctx.strategy)
    if ctx.ckpt is not None:
        trainer.load_state(ctx.ckpt)
        trainer.last_checkpoint = ctx.ckpt_path
    return trainer
