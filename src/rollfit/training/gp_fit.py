"""Fitting the Gaussian-process kinds (``gp``, ``robust_gp``): one marginal-likelihood fit, no epochs.

``gp_fitter(ctx)`` is the ``pipeline.fitting.FITTERS`` entry of both kinds. Its ``fit()``
fits a ``model.gp.GPSurrogate`` to the training rows in float64 (BoTorch's
``fit_gpytorch_mll`` from several starts), logs one metrics row like the trainer's
(``loss/train``, ``loss/val``: MSE in normalized target units; ``rmse/<label>`` in original
units) and writes ``checkpoints/best.ckpt`` atomically, the one checkpoint such a run has.
Nothing is written before the fit has finished, so an interrupt (SIGINT raises
``KeyboardInterrupt`` in the fit) leaves no checkpoint, complete or partial.

An exact GP costs rows^2 memory and rows^3 time: above ``model.gp_max_rows`` training rows
the fitter refuses with a one-line error naming the key and the ``ensemble`` kind.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..model import gp as gp_model
from ..runs.checkpoint import save_checkpoint
from ..runs.folder import best_checkpoint

FitContext = Any  # pipeline.fitting.FitContext (a layer above; the layer test counts even typing imports)


def check_rows(kind: str, rows: int, limit: int) -> None:
    """One-line ConfigError when ``rows`` training rows are too many for an exact GP."""
    if rows > limit:
        raise ConfigError(f"model.gp_max_rows: expected at most {limit} training rows for model.kind '{kind}' "
                          f"(an exact GP needs rows^2 memory and rows^3 time), but got {rows}; use "
                          f"model.kind=ensemble, or raise model.gp_max_rows")


class GPFitter:
    """The ``Fitter`` of the GP kinds: ``fit()`` fits, logs and writes ``best.ckpt``."""

    def __init__(self, ctx: FitContext):
        self.ctx = ctx
        self.kind = ctx.cfg.model.kind
        self.start_epoch = 0
        self.last_checkpoint: Path | None = None
        self.model: gp_model.GPSurrogate | None = None
        check_rows(self.kind, len(ctx.data.train), ctx.cfg.model.gp_max_rows)

    def _rows(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of table rows ``rows`` in float64 (the table's own values)."""
        t = self.ctx.table
        return (torch.as_tensor(np.asarray(t.inputs[rows], np.float64)),
                torch.as_tensor(np.asarray(t.targets[rows], np.float64)))

    def build(self) -> gp_model.GPSurrogate:
        """An unfitted GP on the training rows, with the data module's statistics."""
        cfg, data = self.ctx.cfg, self.ctx.data
        x, y = self._rows(data.train.rows)
        settings = dataclasses.replace(gp_model.DEFAULT_SETTINGS, seed=int(cfg.trainer.seed))
        return gp_model.GPSurrogate(x, y, robust=self.kind == "robust_gp", activation=cfg.model.activation,
                                    input_mean=data.input_mean, input_std=data.input_std,
                                    target_mean=data.target_mean, target_std=data.target_std, settings=settings)

    def fit(self) -> dict[str, float]:
        """Fit, log the metrics row (step 0) and write ``checkpoints/best.ckpt``; the metrics."""
        started = time.perf_counter()
        model = self.build()
        mll = model.fit()
        seconds = time.perf_counter() - started
        row = {**self.metrics(model), "fit_seconds": seconds}
        ctx = self.ctx
        ctx.logger.log_metrics(row, step=0)
        ctx.logger.flush()
        if ctx.on_log is not None:
            ctx.on_log(0, row)
        if ctx.strategy.is_writer:
            path = best_checkpoint(ctx.folder.root)
            self.last_checkpoint = save_checkpoint(path, self.checkpoint(model, mll, row))
        self.model = model
        return row

    def metrics(self, model: gp_model.GPSurrogate) -> dict[str, float]:
        """``loss/train``, ``loss/val`` (MSE in normalized target units, as the trainer's) and
        ``rmse/<label>`` on the validation rows in original units."""
        data, labels = self.ctx.data, self.ctx.cfg.data.out_lbl
        std = torch.as_tensor(np.asarray(data.target_std, np.float64))
        row: dict[str, float] = {}
        for name, split in (("train", data.train), ("val", data.val)):
            x, y = self._rows(split.rows)
            err = model.predict(x) - y
            row[f"loss/{name}"] = float((err / std).square().mean())
            if name == "val":
                row.update({f"rmse/{lbl}": float(v) for lbl, v in zip(labels, err.square().mean(0).sqrt())})
        return row

    def checkpoint(self, model: gp_model.GPSurrogate, mll: list[float], row: dict[str, float]) -> dict[str, Any]:
        """best.ckpt's dict: weights (rows and hyperparameters) and the full config, which
        names the outliers a robust GP flagged (training row, param_idx, output label)."""
        ctx = self.ctx
        config = {**model.constructor_args(), **ctx.meta, "kind": self.kind,
                  "outliers": self.outliers(model), "best_epoch": 0, "best_val": row["loss/val"],
                  "gp_fit": {"mll_per_row": [float(v) for v in mll], "seconds": row["fit_seconds"],
                             "starts": gp_model.starts(model.settings, int(model.train_x.shape[0]), model.robust)}}
        return {"epoch": 0, "model_state_dict": model.state_dict(), "config": config}

    def outliers(self, model: gp_model.GPSurrogate) -> list[dict[str, Any]]:
        """The flagged rows as plain dicts: ``row`` (index into the training rows),
        ``param_idx`` (the rollout group) and ``output`` (the label it was flagged for)."""
        rows, labels = self.ctx.data.train.rows, self.ctx.cfg.data.out_lbl
        param_idx = self.ctx.table.param_idx
        return [{"row": i, "param_idx": int(param_idx[rows[i]]), "output": labels[j]} for i, j in model.outliers()]


def gp_fitter(ctx: FitContext) -> GPFitter:
    """The fitter of ``model.kind`` gp or robust_gp (checks the row limit first)."""
    return GPFitter(ctx)
