"""K-fold cross-validation: retrain a run's config K times, each time predicting one fold.

The folds, fold config and metrics are ``analysis.evaluate``'s (``fold_assignment``,
``fold_config``, ``CrossValidation``); this module trains them, through the one training
path (``pipeline.run.train``), in parallel processes where cores allow. Each fold trains
into its own folder under a temporary directory.
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..analysis.evaluate import CrossValidation, fold_assignment, fold_config, load_run_table, run_split, scored_metrics
from ..analysis.surrogate import Surrogate
from ..config import validate
from ..data.table import RolloutTable
from ..training.trainer import resolve_device
from .run import train


def _fold_job(job: dict[str, Any]) -> tuple[int, np.ndarray, Optional[np.ndarray]]:
    """Train on one fold's training rows and predict its held-out rows (runs in a worker):
    (fold, mean, std or None for a kind without an uncertainty)."""
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    result = train(validate(job["config"], source="run config"), job["out"], table=job["table"])
    # the fold's run as every command loads it (best.ckpt when kept), so CV scores what users get
    s = Surrogate.load(result.run_dir)
    if s.has_std:
        return (job["fold"], *s.predict(job["x_test"], return_std=True))
    return job["fold"], s.predict(job["x_test"]), None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cv_workers(k: int, config: dict[str, Any], requested: Optional[int] = None) -> int:
    """Folds trained at once: one per core on CPU (at most K), one on a GPU (they share it)."""
    if requested:
        return max(1, min(int(requested), k))
    if resolve_device(config["trainer"]["device"]).type != "cpu":
        return 1
    return max(1, min(k, _cores()))


def cross_validate(run: str | Path | Surrogate, k: int = 5, hdf5: Any = None, table: Optional[RolloutTable] = None,
                   overrides: Sequence[str] = (), workers: Optional[int] = None,
                   progress: bool = True) -> CrossValidation:
    """K-fold cross-validation: retrain the run's config K times, each time predicting one fold.

    Rows are all rows of the run's data (or of ``hdf5``); folds are a shuffle seeded with the
    run's ``split_seed``. ``overrides`` (``trainer.max_epochs=500``...) change the fold
    config. Folds run in parallel processes when ``workers`` (default: cores) exceeds one.
    """
    from tqdm.auto import tqdm

    s = run if isinstance(run, Surrogate) else Surrogate.load(run)
    t = load_run_table(s, hdf5) if hdf5 is not None or table is None else table
    folds = fold_assignment(len(t), k, run_split(s.config)[1])
    config = fold_config(s, overrides)
    n_workers = cv_workers(k, config, workers)
    threads = max(1, _cores() // n_workers) if n_workers > 1 else 0
    pred = np.full(t.targets.shape, np.nan, dtype=np.float64)
    std: Optional[np.ndarray] = np.full(t.targets.shape, np.nan, dtype=np.float64)
    with tempfile.TemporaryDirectory(prefix="rollfit-cv-") as tmp:
        jobs = [{"fold": f, "config": config, "table": t.subset(folds != f), "x_test": t.inputs[folds == f],
                 "out": str(Path(tmp) / f"fold_{f}"), "threads": threads} for f in range(k)]
        with tqdm(total=k, desc="cv", unit="fold", disable=not progress, dynamic_ncols=True) as bar:
            for f, p, sd in _run_jobs(jobs, n_workers):
                pred[folds == f] = p
                if sd is None:
                    std = None
                elif std is not None:
                    std[folds == f] = sd
                bar.update(1)
    y = t.targets.astype(np.float64)
    per_fold = [scored_metrics(y[folds == f], pred[folds == f], None if std is None else std[folds == f], s.out_lbl)
                for f in range(k)]
    return CrossValidation(k, list(s.out_lbl), folds, t.inputs, y, pred, per_fold, list(overrides), std)


def _run_jobs(jobs: list[dict[str, Any]], workers: int):
    """Yield (fold, predictions) as folds finish: in this process, or in ``workers`` processes.

    Workers are spawned, not forked: forking a process that already runs torch's thread
    pools can deadlock.
    """
    if workers <= 1:
        for job in jobs:
            yield _fold_job(job)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_fold_job, job) for job in jobs]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
