"""``model.kind: auto``: choose the model kind by cross-validation, then fit it on all rows.

The training rows (all rows with ``train_split`` 1.0) are dealt into ``model.auto_folds``
folds (each row is one param group, so folds never split a group), seeded with
``data.split_seed``. Each candidate of ``model.auto_candidates`` is fitted K times through
its own kind's fitter (``pipeline.fitting.FITTERS``), each time on K-1 folds, into a
temporary run folder under the run folder (``auto_cv/``, removed after), and scored on the
held-out fold. The score is the RMSE of each output divided by that output's standard
deviation over the training rows, averaged over outputs; the candidate with the lowest
pooled out-of-fold score wins (within 1% of it: the earlier candidate), and is fitted again on all
training rows into the run folder itself.

Network candidates (``mlp``, ``ensemble``) stop early within each fold on its held-out
part (``trainer.early_stop_patience``, or ``AUTO_PATIENCE`` epochs when the config has
none) and keep their best epoch; the final fit trains for the folds' median best epoch, so
cross-validation chooses the epoch budget too. Gaussian-process candidates are skipped
above ``model.gp_max_rows`` rows with a one-line note (an exact GP's memory and time grow
as rows^2 and rows^3; the limit is measured in benchmarks/RESULTS.md).

The chosen run is an ordinary run of its kind: its checkpoints record ``kind: <chosen>``
and ``auto`` (candidates, the candidate x fold table, the chosen kind, notes), and the
table is written to ``metrics_auto_cv.json`` in the run folder and shown in the report.
Same data and config, same choice: folds, seeds and candidate order are all fixed.
"""
from __future__ import annotations

import dataclasses
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..analysis.evaluate import fold_assignment, json_safe
from ..config import Config, validate
from ..data.datamodule import HDF5DataModule, normalization_stats
from ..errors import ConfigError
from ..io import atomic_write_json
from ..model.kinds import as_input, kind_spec
from ..runs.checkpoint import load_checkpoint, load_model
from ..runs.folder import RunFolder
from ..training.distributed import QuietLogger
from ..training.trainer import seed_everything
from .fitting import FitContext, make_fitter

GP_KINDS = ("gp", "robust_gp")
NETWORK_KINDS = ("mlp", "ensemble")
TIE = 0.01            # scores within 1% of the lowest count as a tie, won by the earlier candidate (see pick)
AUTO_PATIENCE = 500   # early-stopping patience (epochs) of network candidates in the folds, when the config sets none
CV_FOLDER = "auto_cv"  # temporary folder of the fold fits, inside the run folder
CV_FILE = "auto_cv"    # the table: RunFolder.metrics(CV_FILE) = metrics_auto_cv.json


@dataclasses.dataclass
class CandidateResult:
    """One candidate's cross-validation: a normalized RMSE per fold and pooled, best epochs."""

    kind: str
    folds: list[float]
    cv: float
    epochs: Optional[list[int]]  # network kinds: the best epoch of each fold (None for GPs)
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"folds": self.folds, "cv": self.cv, "epochs": self.epochs, "seconds": round(self.seconds, 2)}


def auto_fitter(ctx: FitContext) -> "AutoFitter":
    """The ``FITTERS`` entry of ``auto``."""
    return AutoFitter(ctx)


class AutoFitter:
    """Cross-validate the candidates, then fit the chosen kind into the run folder (``fit``).

    A resumed ``auto`` run continues its chosen kind (recorded in its checkpoint) with the
    epoch budget chosen before; only kinds that train in epochs can be resumed.
    """

    def __init__(self, ctx: FitContext):
        if ctx.strategy.world > 1:
            raise ConfigError(f"model.kind auto: expected one process, but got {ctx.strategy.world} (torchrun); "
                              "choose the kind with one process, then train it with torchrun")
        self.ctx = ctx
        self.start_epoch = 0
        self.last_checkpoint: Optional[Path] = ctx.ckpt_path
        self.choice: Optional[dict[str, Any]] = None

    def fit(self) -> dict[str, float]:
        """Choose (or, on resume, recall) the kind, fit it, return its metrics."""
        ctx = self.ctx
        if ctx.ckpt is not None:
            choice = dict(ctx.ckpt["config"].get("auto") or {})
            if not choice.get("chosen"):
                raise ConfigError(f"{ctx.ckpt_path}: expected a checkpoint of an auto run recording its choice "
                                  "('auto' in its config), but it has none; train the run again")
        else:
            choice = choose(ctx)
            atomic_write_json(ctx.folder.metrics(CV_FILE), json_safe(choice))
        self.choice = choice
        final = _final_context(ctx, choice)
        if ctx.ckpt is None:
            seed_everything(final.cfg.trainer.seed, final.cfg.trainer.deterministic)
        fitter = make_fitter(final)
        self.start_epoch = fitter.start_epoch
        metrics = fitter.fit()
        self.last_checkpoint = fitter.last_checkpoint
        return metrics


# ----------------------------------------------------------------------------- the choice
def candidates(cfg: Config, rows: int) -> tuple[list[str], dict[str, str]]:
    """(candidates to cross-validate, {skipped candidate: why}); GPs above ``gp_max_rows`` are skipped."""
    keep, skipped = [], {}
    for kind in dict.fromkeys(cfg.model.auto_candidates):  # in order, once each
        if kind in GP_KINDS and rows > cfg.model.gp_max_rows:
            skipped[kind] = (f"{kind} skipped: {rows} training rows is above model.gp_max_rows "
                             f"({cfg.model.gp_max_rows}), where an exact GP's memory and time grow too large")
        else:
            keep.append(kind)
    if not keep:
        raise ConfigError(f"model.auto_candidates: expected at least one candidate that can fit {rows} rows, but "
                          f"every one was skipped ({'; '.join(skipped.values())}); add ensemble or mlp")
    return keep, skipped


def choose(ctx: FitContext) -> dict[str, Any]:
    """Cross-validate every candidate on the training rows; the choice and its table (plain types)."""
    cfg, table = ctx.cfg, ctx.table
    rows = np.asarray(ctx.data.train.rows)
    kinds, skipped = candidates(cfg, len(rows))
    for note in skipped.values():
        print(f"note: model.kind auto: {note}", file=sys.stderr)
    k = min(cfg.model.auto_folds, len(rows))
    if k < 2:
        raise ConfigError(f"model.kind auto: expected at least 2 training rows to cross-validate, but got {len(rows)}")
    folds = fold_assignment(len(rows), k, cfg.data.split_seed)
    y = table.targets[rows].astype(np.float64)
    scale = np.asarray(normalization_stats(y, table.out_lbl)[1], np.float64)
    results = [cross_validate_kind(ctx, kind, rows, folds, scale) for kind in kinds]
    best = pick(results)
    return {"candidates": list(cfg.model.auto_candidates), "chosen": best.kind, "folds": int(k),
            "score": "out-of-fold RMSE / std of the output over the training rows, averaged over outputs",
            "table": {r.kind: r.to_json() for r in results}, "skipped": skipped,
            "max_epochs": final_epochs(best, cfg)}


def pick(results: list[CandidateResult], tie: float = TIE) -> CandidateResult:
    """The lowest score, except that a candidate within ``tie`` (relative) of it that comes
    earlier in ``model.auto_candidates`` wins: a difference that small is fold noise, and the
    earlier candidates are the simpler, faster ones (gp before robust_gp before ensemble)."""
    lowest = min(r.cv for r in results)
    return next(r for r in results if r.cv <= lowest * (1.0 + tie))


def final_epochs(result: CandidateResult, cfg: Config) -> Optional[int]:
    """The epoch budget of the final fit: the folds' median best epoch + 1 (network kinds)."""
    if not result.epochs:
        return None
    return max(1, min(cfg.trainer.max_epochs, int(round(statistics.median(result.epochs))) + 1))


def cross_validate_kind(ctx: FitContext, kind: str, rows: np.ndarray, folds: np.ndarray,
                        scale: np.ndarray) -> CandidateResult:
    """Fit ``kind`` K times, each on all folds but one, and score it on the held-out fold."""
    start = time.perf_counter()
    cfg = fold_config(ctx.cfg, kind)
    pred = np.zeros((len(rows), len(ctx.table.out_lbl)))
    epochs: list[int] = []
    for f in range(int(folds.max()) + 1):
        held = folds == f
        root = ctx.folder.root / CV_FOLDER / f"{kind}_fold{f}"
        try:
            pred[held], best = fit_fold(ctx, cfg, rows[~held], rows[held], root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if best is not None:
            epochs.append(best)
    shutil.rmtree(ctx.folder.root / CV_FOLDER, ignore_errors=True)
    y = ctx.table.targets[rows].astype(np.float64)
    per_fold = [normalized_rmse(y[folds == f], pred[folds == f], scale) for f in range(int(folds.max()) + 1)]
    return CandidateResult(kind, per_fold, normalized_rmse(y, pred, scale),
                           epochs if kind in NETWORK_KINDS else None, time.perf_counter() - start)


def normalized_rmse(y: np.ndarray, pred: np.ndarray, scale: np.ndarray) -> float:
    """RMSE of each output over ``scale`` (its std), averaged over outputs."""
    return float(np.mean(np.sqrt(np.mean((pred - y) ** 2, axis=0)) / scale))


def fold_config(cfg: Config, kind: str) -> Config:
    """The config of one candidate's fold fits: its kind, no report or progress bar, early stopping
    for network kinds (the run's patience, else ``AUTO_PATIENCE``), checkpoints only at the end."""
    raw = cfg.to_dict()
    raw["model"]["kind"] = kind
    t = raw["trainer"]
    t.update(progress=False, report=False, save_period=t["max_epochs"], checkpoint_every_minutes=None,
             keep_last=None, keep_best=True)
    if kind in NETWORK_KINDS and not t["early_stop_patience"]:
        t["early_stop_patience"] = AUTO_PATIENCE
    return validate(raw, source=f"model.kind auto, candidate {kind}")


class FoldData(HDF5DataModule):
    """The data of one fold fit: fitted on ``fit_rows``, validated on the held-out rows.

    Statistics (normalization, bounds) come from the fitted rows, as in any run.
    """

    def __init__(self, base: HDF5DataModule, fit_rows: np.ndarray, held_rows: np.ndarray):
        super().__init__(base.table, base.batch_size, base.train_split, base.split_seed, base.device)
        self._rows = (np.sort(fit_rows), np.sort(held_rows))

    def setup(self) -> "FoldData":
        fit_rows, held_rows = self._rows
        self.train, self.val = self._split(fit_rows), self._split(held_rows)
        x, y = self.table.inputs[fit_rows], self.table.targets[fit_rows]
        self.input_mean, self.input_std = normalization_stats(x, self.table.in_lbl)
        self.target_mean, self.target_std = normalization_stats(y, self.table.out_lbl)
        self.input_min, self.input_max = x.min(axis=0), x.max(axis=0)
        return self


def fit_fold(ctx: FitContext, cfg: Config, fit_rows: np.ndarray, held_rows: np.ndarray,
             root: Path) -> tuple[np.ndarray, Optional[int]]:
    """Fit one fold into ``root`` through the kind's own fitter; (held-out predictions, best epoch)."""
    import torch

    folder = RunFolder(root)
    data = FoldData(ctx.data, fit_rows, held_rows).setup()
    sub = FitContext(cfg, ctx.table, data, folder, QuietLogger(folder.logs), dict(ctx.meta), None, ctx.strategy)
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)  # each fit starts alike, whatever ran before
    fitter = make_fitter(sub)
    fitter.fit()
    model, model_cfg, path = load_model(folder)
    with torch.no_grad():
        pred = model.predict(as_input(model, ctx.table.inputs[held_rows]))
    best = None
    if kind_spec(cfg.model.kind).resumable:  # trained in epochs: the epoch of the weights kept
        best = model_cfg.get("best_epoch")
        best = int(best) if best is not None else int(load_checkpoint(path)["epoch"])
    return pred.double().cpu().numpy(), best


# ----------------------------------------------------------------------------- the final fit
def _final_context(ctx: FitContext, choice: dict[str, Any]) -> FitContext:
    """The run's own context with the chosen kind, its epoch budget, and the choice in the checkpoints."""
    raw = ctx.cfg.to_dict()
    raw["model"]["kind"] = choice["chosen"]
    if choice.get("max_epochs"):
        raw["trainer"]["max_epochs"] = int(choice["max_epochs"])
    cfg = validate(raw, source=f"model.kind auto, chosen {choice['chosen']}")
    meta = {**ctx.meta, "auto": choice}
    return dataclasses.replace(ctx, cfg=cfg, meta=meta)


