"""Hyperparameter sweeps on Ray Tune: each trial an ordinary rollfit run folder.

``run_sweep`` reads the rows once in the driver and hands them to every trial through
Ray's object store (``tune.with_parameters``: one copy per node, read zero-copy by the
trials there). Each trial is ``pipeline.run.train`` on the base config with the sampled
values set, writing ``DIR/trial_NNNNN/`` -- a complete run folder, so ``rollfit evaluate``,
``plot`` etc. work on it -- and reports its metrics at every log period through the
trainer's ``on_log`` callback. ASHA stops trials that lag behind at its rungs; Optuna's
TPE proposes the values when optuna is installed and the space has no grid (random or
grid search otherwise). Without an address Ray starts locally on this machine's cores;
with one (``auto`` or ``HOST:PORT``) the same sweep runs on that cluster, whose nodes must
have rollfit installed and see DIR (a shared file system).

Outputs in DIR: ``results.csv`` (one row per trial, best first), ``best_config.yaml`` (the
base config with the best trial's values, ready for ``rollfit train``), ``sweep_plot.png``
(metric vs the most important hyperparameters), ``sweep.json`` (summary) and ``ray/``
(Ray's own bookkeeping).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import Config, validate
from ..errors import ConfigError, OutputError, RollfitError, did_you_mean, require_package
from ..io import check_writable
from .results import SweepResult, write_outputs
from .space import SearchSpace, check_trials, with_values

RAY_HINT = '"rollfit[ray]"'
METRICS = ("loss/val", "loss/train", "loss/reconstruction", "loss/l1", "loss/l2", "loss/grad_penalty")
TIME_ATTR = "epoch"


@dataclass
class SweepSettings:
    """How to run a sweep (the CLI's options)."""

    samples: Optional[int] = None        # None: 1 pass over the grid if there is one, else 10 samples
    address: Optional[str] = None        # None: start Ray locally; "auto" or "HOST:PORT": connect
    metric: str = "loss/val"
    mode: str = "min"
    concurrent: Optional[int] = None     # None: one trial per CPU
    gpus_per_trial: float = 0.0
    grace_epochs: Optional[int] = None   # ASHA's first rung; None: see first_rung
    early_stop: bool = True
    seed: int = 0
    verbose: bool = False


# ---- checks before anything starts -----------------------------------------------------
def check_settings(settings: SweepSettings) -> None:
    """Metric, mode and counts, checked before Ray starts."""
    if settings.metric not in METRICS:
        raise ConfigError(f"--metric: expected one of {', '.join(METRICS)}, but got '{settings.metric}'"
                          f"{did_you_mean(settings.metric, METRICS)}")
    if settings.mode not in ("min", "max"):
        raise ConfigError(f"--mode: expected min or max, but got '{settings.mode}'")
    for name in ("samples", "concurrent"):
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name}: expected an integer >= 1, but got {value}")


def first_rung(cfg: Config, settings: SweepSettings) -> int:
    """ASHA's first rung: ``--grace-epochs``, else max(log_period, max_epochs // 8) cut to
    max_epochs, so short trials reach it (Ray refuses a first rung past its last epoch)."""
    t = cfg.trainer
    if settings.grace_epochs is not None:
        if settings.grace_epochs > t.max_epochs:
            raise ConfigError(f"--grace-epochs: expected at most trainer.max_epochs ({t.max_epochs}), "
                              f"but got {settings.grace_epochs}")
        return settings.grace_epochs
    return max(1, min(max(t.log_period, t.max_epochs // 8), t.max_epochs))


def check_output(output: Path) -> None:
    """DIR must be new or empty (trial folders of an older sweep would be mixed in) and writable."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OutputError(f"{output}: expected a new or empty sweep folder, but it already holds files; "
                          f"choose another --output")
    check_writable(output)


def trial_config(base: dict[str, Any], values: dict[str, Any]) -> Config:
    """The config of one trial: the base with the sampled values, set up for unattended runs.

    A trial checkpoints at every log period (keeping the newest two unless ``keep_last`` is
    set), so a trial that ASHA stops is still a complete run folder.
    """
    cfg = validate(with_values(base, values), source="trial config")
    t = cfg.trainer
    t.progress = False
    t.save_period = min(t.save_period, t.log_period)
    t.keep_last = t.keep_last or 2
    return cfg


# ---- inside a trial (a Ray worker process) ------------------------------------------------
def run_trial(config: dict[str, Any], table=None, base: Optional[dict[str, Any]] = None,
              space: Optional[SearchSpace] = None, root: str = ".", threads: int = 1) -> None:
    """One trial: train the base config with the sampled ``config`` into ``root/<trial name>``."""
    import torch
    from ray import tune

    from ..pipeline.run import train

    torch.set_num_threads(max(1, threads))
    name = tune.get_context().get_trial_name()
    cfg = trial_config(base, space.decode(config))
    train(cfg, Path(root) / name, table=table,
          on_log=lambda epoch, row: tune.report({**row, TIME_ATTR: epoch + 1}))


def trial_name(trial) -> str:
    """``trial_NNNNN`` from the running counter that starts Ray's experiment tag (stateless, so
    the rollfit run folder, Ray's trial folder and the trial itself all agree on it)."""
    counter = str(trial.experiment_tag).split("_", 1)[0]
    return f"trial_{int(counter):05d}" if counter.isdigit() else f"trial_{trial.trial_id}"


# ---- the driver ------------------------------------------------------------------------
def start_ray(address: Optional[str], table_bytes: int, verbose: bool) -> bool:
    """Connect to ``address`` or start a local Ray on this machine's cores; True if we started it."""
    import logging

    ray = require_package("ray", RAY_HINT, "sweeps")
    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.ERROR)
    try:
        if address is None:
            store = max(256 * 2**20, 3 * table_bytes)
            ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=store, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"a running Ray cluster at '{address}'" if address else "a local Ray instance"
        raise RollfitError(f"--address: expected {where}, but starting Ray failed: {first}") from None
    return True


def _search_alg(space: SearchSpace, seed: int, notes: list[str]):
    """Optuna's TPE when installed and the space has no grid, else Ray's random/grid generator."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if space.has_grid:
        notes.append("search: grid (+ random for non-grid keys); Optuna does not take grids")
        return BasicVariantGenerator(random_state=seed)
    try:
        import optuna  # noqa: F401
    except ImportError:
        notes.append("search: random (install optuna for TPE)")
        return BasicVariantGenerator(random_state=seed)
    from ray.tune.search.optuna import OptunaSearch

    notes.append("search: Optuna TPE")
    return OptunaSearch(seed=seed)


def _scheduler(cfg: Config, settings: SweepSettings, notes: list[str]):
    """ASHA on the epoch count, first rung at ``grace_epochs``; None when early stopping is off."""
    if not settings.early_stop:
        notes.append("early stopping: off")
        return None
    from ray.tune.schedulers import ASHAScheduler

    t = cfg.trainer
    grace = first_rung(cfg, settings)
    notes.append(f"early stopping: ASHA, first rung at epoch {grace}, reduction factor 3")
    # max_t one past the last epoch: at max_t ASHA stops a trial at its final report, before the
    # trainer writes its final checkpoint; a completed trial must end on its own.
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=t.max_epochs + 1, grace_period=max(1, grace),
                         reduction_factor=3)


def _progress_callback():
    """A Tune callback printing one line per finished trial (Ray's own tables are off)."""
    from ray.tune import Callback

    class _Lines(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            print(f"  {trial_name(trial)}: finished at epoch {last.get(TIME_ATTR, '?')}, "
                  f"{_metric_text(last)}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"  {trial_name(trial)}: failed (see {trial.local_path})", flush=True)

    return _Lines()


def _metric_text(result: dict[str, Any]) -> str:
    return ", ".join(f"{k} {result[k]:.5g}" for k in ("loss/train", "loss/val") if k in result)


def run_sweep(cfg: Config, space: SearchSpace, output: str | Path, settings: SweepSettings,
              table=None) -> SweepResult:
    """Run the sweep and write its outputs; ``space`` must come from ``load_space`` (checked)."""
    from ..pipeline.run import load_table

    check_settings(settings)
    check_trials(space, settings.samples)
    first_rung(cfg, settings)
    ray = require_package("ray", RAY_HINT, "sweeps")
    output = Path(output).resolve()
    check_output(output)
    table = table if table is not None else load_table(cfg)
    started = start_ray(settings.address, table.inputs.nbytes + table.targets.nbytes, settings.verbose)
    try:
        grid = _fit(cfg, space, output, settings, table)
    finally:
        if started:
            ray.shutdown()
    return write_outputs(grid, cfg, space, output, settings)


def _fit(cfg: Config, space: SearchSpace, output: Path, settings: SweepSettings, table):
    """Build the Tuner (resources, search, ASHA) and run every trial; returns Ray's ResultGrid."""
    import ray
    from ray import tune

    cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    node_cpus = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=cpus)
    concurrent = settings.concurrent or max(1, cpus)
    threads = max(1, min(cpus // concurrent, node_cpus))  # a trial runs on one node
    samples = settings.samples or (1 if space.has_grid else 10)
    notes = space.notes
    notes.append(f"trials: {samples * space.grid_size()}, at most {concurrent} at once, {threads} CPU(s) each")
    trainable = tune.with_parameters(run_trial, table=table, base=cfg.to_dict(), space=space,
                                     root=str(output), threads=threads)
    resources = {"cpu": threads, **({"gpu": settings.gpus_per_trial} if settings.gpus_per_trial else {})}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=space.to_ray(),
        tune_config=tune.TuneConfig(
            metric=settings.metric, mode=settings.mode, num_samples=samples, max_concurrent_trials=concurrent,
            search_alg=_search_alg(space, settings.seed, notes), scheduler=_scheduler(cfg, settings, notes),
            trial_name_creator=trial_name, trial_dirname_creator=trial_name, reuse_actors=True),
        run_config=tune.RunConfig(name="ray", storage_path=str(output), verbose=1 if settings.verbose else 0,
                                  callbacks=[_progress_callback()]))
    for line in notes:
        print(f"sweep: {line}", flush=True)
    _quiet(settings.verbose)
    return tuner.fit()


def _quiet(verbose: bool) -> None:
    """Unless verbose: Ray's legacy reporter (which honours verbose=0) and a silent Optuna."""
    if verbose:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass
