"""``Trainer``: Adam + ReduceLROnPlateau over resident tensors, with the original pipeline's loss.

``fit`` runs epochs top-down: the strategy (``distributed.Local`` or ``DistContext``) runs
each through the engine (``step.py``), whose ``validate`` gives the validation MSE (the
plateau scheduler's signal); logs and checkpoints follow at their periods. Losses stay
tensors until a log period: one device sync per epoch (the scheduler and divergence check).

Resilience (docs/guide.md, Resume, fine-tune, interruptions): checkpoints carry everything an
exact resume needs (``training_state``), which ``load_state`` restores in place. A non-finite
loss stops the run or (``on_nonfinite: rollback``) restores the last good state with half
the lr; SIGINT/SIGTERM end the run after the epoch with a checkpoint (``signals.py``).

Best epoch (docs/guide.md): the lowest validation loss, its epoch and a copy of its weights
are kept in memory (``BestEpoch``; a copy costs microseconds, a file write per improving
epoch would not) and written to ``checkpoints/best.ckpt`` at checkpoint times when they
changed, so also at the end, on an interrupt, on early stopping and before a divergence
error. ``trainer.early_stop_patience`` ends the run once the validation loss has not improved
by more than ``lr_threshold`` (relative) for that many epochs. The loss that chooses is the
run's own reconstruction loss on the validation rows (``loss/val_recon`` in the log: huber,
cauchy... are robust to the gross outliers rollout files have, whose squares would dominate
the MSE and pick a lucky early epoch); the MSE when ``recon_type`` is mse or the validation
rows are the training rows (train_split 1.0, no extra pass). The best-so-far travels in
``trainer_state`` (resume and rollbacks restore it).
"""
from __future__ import annotations

import math
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from ..config import TrainerConfig
from ..data.datamodule import HDF5DataModule
from ..errors import OutputError, TrainingError
from ..model.losses import reconstruction_loss
from ..model.network import RegressionNet
from ..runs.checkpoint import (CKPT_DIR, best_checkpoint, checkpoint_name, list_checkpoints, save_checkpoint,
                               training_weights)
from .distributed import Local
from .logger import SimpleLogger
from .signals import InterruptGuard, TrainingInterrupted, resume_command, signal_name
from .state import capture_rng, clone_tree, load_optimizer_state, restore_rng, set_group_value
from .step import (COMPONENTS, ThreadChoice, activation_width, choose_engine, make_engine,  # noqa: F401
                   make_optimizer, make_scheduler, resolve_device)  # resolve_device: imported from here by the pipeline

MAX_ROLLBACKS = 3  # trainer.on_nonfinite=rollback gives up after this many rollbacks


def _clock() -> float:
    """Seconds on a monotonic clock (time-based checkpoints; tests replace it)."""
    return time.monotonic()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


class BestEpoch:
    """The lowest validation loss so far, its epoch and (``keep``) a copy of its weights;
    also the early-stopping count (epochs since an improvement by more than ``threshold``).

    The copy goes into buffers allocated once, so an improving epoch costs a few tensor
    copies (microseconds for these networks) and no allocation or file write.
    """

    def __init__(self, model: torch.nn.Module, threshold: float, keep: bool):
        self.model, self.threshold, self.keep = model, float(threshold), keep
        self._live: dict[str, Tensor] = {}
        self._ptr = 0
        self.weights: Optional[dict[str, Tensor]] = None  # allocated at the first improvement
        self.epoch, self.val = -1, math.inf
        self.stop_ref, self.bad = math.inf, 0  # early stopping: the reference loss, epochs without a gain
        self.written = -1  # the epoch best.ckpt holds, as written by this process (-1: not yet)

    def live(self) -> dict[str, Tensor]:
        """The model's state tensors (cached while they alias its parameters: an engine may
        re-point parameters into its own buffer, resume and rollback copy into them in place)."""
        first = next(iter(self.model.parameters()), None)
        ptr = first.data_ptr() if first is not None else 0
        if not self._live or ptr != self._ptr:
            self._live, self._ptr = self.model.state_dict(), ptr
        return self._live

    def update(self, epoch: int, val: float) -> bool:
        """Record epoch ``epoch``'s validation loss; True when it is a new best."""
        if val < self.stop_ref * (1.0 - self.threshold):  # the plateau scheduler's rule (mode min, rel)
            self.stop_ref, self.bad = val, 0
        else:
            self.bad += 1
        if not val < self.val:
            return False
        self.epoch, self.val = epoch, val
        if self.keep:
            self._copy_in(self.live())
        return True

    def _copy_in(self, source: dict[str, Tensor]) -> None:
        """Copy ``source`` (a state dict of the model's layout) into the kept weights."""
        live = self.live()
        if self.weights is None:
            self.weights = {k: torch.empty_like(v) for k, v in live.items()}
        with torch.no_grad():
            for k, v in self.weights.items():
                v.copy_(source[k])

    @property
    def pending(self) -> bool:
        """True when the kept weights are not what this process last wrote to best.ckpt."""
        return self.weights is not None and self.epoch >= 0 and self.written != self.epoch

    def state(self) -> Optional[dict[str, Any]]:
        """The form stored in ``trainer_state["best"]`` (live references; None before any epoch)."""
        if self.epoch < 0:
            return None
        state: dict[str, Any] = {"epoch": self.epoch, "val": self.val, "stop_ref": self.stop_ref,
                                 "bad_epochs": self.bad}
        if self.weights is not None:
            state["net_state_dict"] = self.weights
        return state

    def load(self, state: Optional[dict[str, Any]]) -> None:
        """Restore ``state()`` from a checkpoint or snapshot (None: no best yet). best.ckpt is
        written again at the next checkpoint time: the file on disk may belong to another
        trajectory (e.g. written after the checkpoint a resume starts from)."""
        self.written = -1
        if state is None:
            self.weights, self.epoch, self.val, self.stop_ref, self.bad = None, -1, math.inf, math.inf, 0
            return
        self.epoch, self.val = int(state["epoch"]), float(state["val"])
        self.stop_ref, self.bad = float(state["stop_ref"]), int(state["bad_epochs"])
        saved = state.get("net_state_dict")
        if self.keep and isinstance(saved, dict):
            self._copy_in(saved)
        else:
            self.weights = None


class Trainer:
    """Train a ``RegressionNet`` on an ``HDF5DataModule`` into ``run_dir``."""

    def __init__(self, model: RegressionNet, cfg: TrainerConfig, data: HDF5DataModule, run_dir: str | Path,
                 logger: Optional[SimpleLogger] = None, meta: Optional[dict[str, Any]] = None,
                 on_log: Optional[Callable[[int, dict[str, float]], None]] = None, dist=None):
        self.strategy = dist or Local()  # Local, or a distributed.DistContext under torchrun (WORLD_SIZE > 1)
        data = self.strategy.shard(data)  # this process's rows
        self.cfg, self.data, self.run_dir = cfg, data, Path(run_dir)
        self.on_log = on_log  # called with (epoch, logged row) after each log flush (e.g. sweeps report)
        self.device = data.device
        self.model = model.to(self.device)
        self.logger = logger or SimpleLogger(self.run_dir / "logs")
        self.meta = meta or {}
        # the engine (trainer.engine, step.py) decides how Adam and the plateau scheduler are built
        self.engine_name = choose_engine(cfg, self.device, len(data.train), distributed=self.strategy.world > 1)
        self.opt = make_optimizer(list(self.model.parameters()), cfg, self.engine_name, self.device)
        self.sched = make_scheduler(self.opt, cfg, self.engine_name)
        fixed = cfg.threads if isinstance(cfg.threads, int) else None
        self.threads = ThreadChoice(self.device, activation_width(self.model), fixed, timed=not cfg.deterministic)
        self.start_epoch = 0
        # resumable state beyond model/optimizer/scheduler: shuffling has its own generator
        # (stored in checkpoints), divergence rollbacks are counted, the newest checkpoint known
        self.shuffle_gen = torch.Generator(device=self.device)
        self.shuffle_gen.manual_seed(cfg.seed)
        self.rollbacks = 0
        self.last_checkpoint: Optional[Path] = None
        self._yn_train = self._normalize_targets(data.train.y)
        yn_val = self._yn_train if data.same_split else self._normalize_targets(data.val.y)
        self.engine = make_engine(self.model, cfg, self.opt, data.val.x, yn_val, self.engine_name, self.sched,
                                  self.threads)
        self.strategy.attach(self)  # torchrun: rank 0's weights; gradients all-reduced before each update
        self.history: list[dict[str, float]] = []
        self.best = BestEpoch(self.model, cfg.lr_threshold, keep=cfg.keep_best)
        self._val_x, self._yn_val = data.val.x, yn_val
        # the loss that chooses (module docstring); one forward pass an epoch, only when something uses it
        self._val_recon = (cfg.recon_type != "mse" and not data.same_split
                           and (cfg.keep_best or cfg.early_stop_patience > 0))
        self._selection: Optional[float] = None  # this epoch's value of that loss
        self.stopped_early: Optional[int] = None  # the epoch early stopping ended the run at
        self.logger.log_resolved(self.resolved())

    def resolved(self) -> dict[str, Any]:
        """What ``auto`` resolved for this run: device, engine, threads, torch version."""
        rows = min(len(self.data.train), self.data.batch_size)
        return {"device": str(self.device), "engine": self.engine.name, "threads": self.threads.describe(rows),
                "torch": str(torch.__version__)}

    def _normalize_targets(self, y: Tensor) -> Tensor:
        m = self.model
        return (y - m.target_mean) / m.target_std if m.target_convention == "normalized" else y

    # ---- the loop ---------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train from ``start_epoch`` to ``max_epochs``; returns the last logged metrics.

        Per epoch: train, validate, handle a non-finite loss (stop, or roll back to the last
        good state), step the scheduler, record the best epoch, log and checkpoint when due
        (period, time, signal, early stop). A first SIGINT/SIGTERM ends the run after the
        epoch with a checkpoint (``TrainingInterrupted``); a second one aborts at once.
        """
        cfg, last = self.cfg, self.cfg.max_epochs - 1
        metrics: dict[str, float] = {}
        if self._patience_spent() and self.start_epoch < cfg.max_epochs:  # resumed after an early stop
            self._announce(f"the run stopped early at epoch {self.start_epoch - 1} (trainer.early_stop_patience "
                           f"{cfg.early_stop_patience}, best epoch {self.best_epoch}); nothing to train: fine-tune "
                           f"with --init-from to train it further")
            self.stopped_early = self.start_epoch - 1
            return metrics
        bar = self._progress()
        self._good, self._saved_at = self._snapshot(self.start_epoch - 1), _clock()
        epoch = self.start_epoch
        try:
            with InterruptGuard(announce=self.strategy.is_writer) as guard:
                while epoch < cfg.max_epochs:
                    train = self._train_epoch(epoch)
                    val = self.engine.validate()
                    requested = guard.requested  # read once: a signal arriving later counts next epoch
                    save = self._checkpoint_due(epoch, last) or requested is not None
                    train, val, save = self.strategy.agree(train, val, save, guard)  # one decision for all ranks
                    requested = guard.requested
                    stop = requested is not None and epoch < last
                    problem = self._nonfinite(train, val, check_weights=save or stop)
                    if problem is not None:
                        epoch = self._diverged(epoch, problem, bar)
                        continue
                    self.sched.step(val)
                    early = self._track_best(epoch, val)
                    if early and not (save or stop) and (problem := self._nonfinite(train, val, True)) is not None:
                        epoch = self._diverged(epoch, problem, bar)  # weights are checked before any save
                        continue
                    if epoch % cfg.log_period == 0 or epoch == last or early:
                        metrics = self._log(epoch, train, val, bar)
                    if save or stop or early:
                        self.save(epoch)
                    if stop:
                        raise self._interrupted(epoch, requested)
                    if early:
                        self.stopped_early = epoch
                        break
                    if bar is not None:
                        bar.update(1)
                    epoch += 1
        finally:
            if bar is not None:
                bar.close()
        if self.stopped_early is not None:
            self._announce(f"early stop at epoch {self.stopped_early}: the validation loss did not improve by more "
                           f"than {cfg.lr_threshold:g} (relative) for {cfg.early_stop_patience} epochs; best epoch "
                           f"{self.best_epoch} (validation loss {self.best_val:.6g})")
        return metrics

    # ---- the best epoch and early stopping ----------------------------------------------
    @property
    def best_epoch(self) -> Optional[int]:
        """The epoch of the lowest validation loss so far (None before the first epoch)."""
        return self.best.epoch if self.best.epoch >= 0 else None

    @property
    def best_val(self) -> Optional[float]:
        """The lowest validation loss so far, in training units (the selection loss of
        ``_selection_loss``: the run's reconstruction loss or the MSE; None before the first epoch)."""
        return self.best.val if self.best.epoch >= 0 else None

    @property
    def best_path(self) -> Path:
        """``checkpoints/best.ckpt`` of this run (written when ``trainer.keep_best``)."""
        return best_checkpoint(self.run_dir)

    def _track_best(self, epoch: int, val: Tensor) -> bool:
        """Record epoch ``epoch``'s selection loss (one host read: the divergence check has
        synchronized already); True when early stopping ends the run here."""
        self._selection = self._selection_loss(val)
        self.best.update(epoch, self._selection)
        return self._patience_spent() and epoch < self.cfg.max_epochs - 1

    def _selection_loss(self, val: Tensor) -> float:
        """The loss that chooses the best epoch: the validation MSE ``val``, or (``_val_recon``)
        the configured reconstruction loss on the validation rows, one forward pass (the loss
        in effect after ``recon_start_epoch``, so values compare across the whole run). Under
        torchrun each rank holds a share of the rows: the shares are summed, weighted."""
        if not self._val_recon:
            return float(val)
        c = self.cfg
        with torch.no_grad():
            if len(self._val_x):
                pred = self.model.forward_normalized(self._val_x)
                loss = reconstruction_loss(pred, self._yn_val, c.recon_type, c.recon_delta, c.recon_start_epoch,
                                           c.recon_start_epoch).reshape(())
            else:  # a rank without validation rows
                loss = torch.zeros((), device=self.device)
            if self.strategy.world > 1:
                import torch.distributed as dist

                loss = loss.float() * float(self.strategy.val_weight)
                dist.all_reduce(loss)
        return float(loss)

    def _patience_spent(self) -> bool:
        """True when ``early_stop_patience`` epochs passed without an improvement."""
        n = self.cfg.early_stop_patience
        return n > 0 and self.best.bad >= n

    def _announce(self, line: str) -> None:
        """One line for the user (the writing rank only), after the progress bar."""
        if self.strategy.is_writer:
            print(line, flush=True)

    def _train_epoch(self, epoch: int) -> dict[str, Tensor]:
        """One pass over the training rows; returns row-weighted mean loss components."""
        return self.strategy.train_epoch(self, epoch)

    # ---- logging and checkpoints --------------------------------------------------------
    def _log(self, epoch: int, train: dict[str, Tensor], val: Tensor, bar) -> dict[str, float]:
        row = {"loss/train": float(train["train"]), "loss/val": float(val),
               **{f"loss/{k}": float(train[k]) for k in COMPONENTS}, "lr": self._lr(),
               **({"loss/val_recon": self._selection} if self._val_recon and self._selection is not None else {})}
        self.logger.log_metrics(row, step=epoch)
        self.logger.flush()
        self.history.append({"epoch": epoch, **row})
        if self.on_log is not None:
            self.on_log(epoch, row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss/train']:.4g}", val=f"{row['loss/val']:.4g}", lr=f"{row['lr']:.2g}",
                            refresh=False)
        return row

    def state_dict(self, epoch: int) -> dict[str, Any]:
        """The checkpoint dict: the original pipeline's keys, the resume state and rollfit's config additions."""
        state = self.training_state(epoch)
        # weights in original units (the original's convention, so its snippet's model(x) is right);
        # the exact training weights go with the resume state
        state["trainer_state"] = {**state["trainer_state"], "net_state_dict": state["model_state_dict"],
                                  "net_convention": self.model.target_convention}
        state["model_state_dict"] = self.model.units_state_dict()
        config = {**self.model.constructor_args(), "target_convention": "raw", **self.meta,
                  "resolved": self.resolved()}
        return {**state, "config": config}

    def training_state(self, epoch: int) -> dict[str, Any]:
        """What an exact resume needs besides the config, as live references (clone to keep).

        ``trainer_state`` holds the shuffling generator, the global RNGs (python, numpy,
        torch, CUDA), the rollback count and the log file name.
        """
        return {"epoch": epoch, "model_state_dict": self.model.state_dict(),
                "optimizer_state_dict": self.opt.state_dict(), "scheduler_state_dict": self.sched.state_dict(),
                "trainer_state": {"shuffle_rng": self.shuffle_gen.get_state(), "global_rng": capture_rng(),
                                  "rollbacks": self.rollbacks, "log_file": self.logger.path.name,
                                  **({"best": best} if (best := self.best.state()) is not None else {})}}

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from ``training_state`` (a checkpoint or a snapshot); ``fit`` then continues
        at ``state["epoch"] + 1``. A resumed run makes no timing-based choice (threads)."""
        self.threads.timed = False
        self._restore(state)
        self.logger.log_resolved(self.resolved())

    def _restore(self, state: dict[str, Any]) -> None:
        """Load a training state in place (tensors copied, so engines holding them stay valid)."""
        ts = state["trainer_state"]
        self.model.load_state_dict(training_weights(state), strict=True)
        load_optimizer_state(self.opt, state["optimizer_state_dict"])
        self.sched.load_state_dict(clone_tree(state["scheduler_state_dict"]))
        self.shuffle_gen.set_state(ts["shuffle_rng"])
        restore_rng(ts["global_rng"])
        self.rollbacks = int(ts.get("rollbacks", 0))
        self.best.load(ts.get("best"))
        self.engine.on_state_loaded()
        self.start_epoch = int(state["epoch"]) + 1

    def save(self, epoch: int) -> Path:
        """Write ``checkpoints/ep_NNNNNN.ckpt`` atomically, keep it as the last good state,
        write best.ckpt if the best epoch changed, then prune to ``keep_last`` (never
        best.ckpt). A failed write names the last complete checkpoint."""
        path = self.run_dir / CKPT_DIR / checkpoint_name(epoch)
        state = self.state_dict(epoch)
        try:
            if self.strategy.is_writer:  # rank 0 alone writes
                save_checkpoint(path, state)
            self.save_best()
        except OutputError as exc:
            raise OutputError(f"{exc}; last complete checkpoint: {self.last_checkpoint or 'none yet'}") from None
        self.last_checkpoint, self._saved_at = path, _clock()
        self._good = clone_tree({k: v for k, v in state.items() if k != "config"})
        self._prune(epoch)
        return path

    def save_best(self) -> Optional[Path]:
        """Write ``checkpoints/best.ckpt`` atomically when the kept best weights changed since
        the last write (rank 0 writes); returns its path when written."""
        if not self.best.pending:
            return None
        if self.strategy.is_writer:
            save_checkpoint(self.best_path, self.best_state_dict())
        self.best.written = self.best.epoch
        return self.best_path

    def best_state_dict(self) -> dict[str, Any]:
        """best.ckpt's dict: the checkpoint format of ``state_dict`` for the best epoch's weights
        (``epoch``, ``model_state_dict`` in original units, the full ``config``, which also
        records ``best_epoch`` and ``best_val``) and the weights as trained (top-level
        ``net_state_dict``/``net_convention``, what ``--init-from`` fine-tunes from). The
        optimizer state and RNGs of that epoch are not kept (copying them each improving epoch
        would cost more than the epoch), so ``--resume`` uses the newest ep_*.ckpt."""
        best = self.best
        if best.weights is None:
            raise TrainingError("best.ckpt: expected the best epoch's weights (trainer.keep_best), but none are kept")
        live = best.live()
        with torch.no_grad():  # the units conversion reads the live model: swap the best weights in and back
            current = {k: v.clone() for k, v in live.items()}
            try:
                for k, v in live.items():
                    v.copy_(best.weights[k])
                units, args = self.model.units_state_dict(), self.model.constructor_args()
            finally:
                for k, v in live.items():
                    v.copy_(current[k])
        config = {**args, "target_convention": "raw", **self.meta, "resolved": self.resolved(),
                  "best_epoch": best.epoch, "best_val": best.val}
        return {"epoch": best.epoch, "model_state_dict": units, "config": config,
                "net_state_dict": {k: v.clone() for k, v in best.weights.items()},
                "net_convention": self.model.target_convention}

    def _checkpoint_due(self, epoch: int, last: int) -> bool:
        """At ``save_period``, at the last epoch, or ``checkpoint_every_minutes`` after the last save."""
        if epoch % self.cfg.save_period == 0 or epoch == last:
            return True
        minutes = self.cfg.checkpoint_every_minutes
        return minutes is not None and _clock() - self._saved_at >= 60.0 * minutes

    def _prune(self, epoch: int) -> None:
        """Delete all but the newest ``keep_last`` checkpoints up to ``epoch`` (later ones, left by
        an abandoned run a resume restarted before, are overwritten when reached)."""
        if self.cfg.keep_last is None or not self.strategy.is_writer:
            return
        done = [p for p in list_checkpoints(self.run_dir) if int(p.stem[3:]) <= epoch]
        for old in done[:-self.cfg.keep_last]:
            old.unlink(missing_ok=True)

    def _snapshot(self, epoch: int) -> dict[str, Any]:
        """An in-memory copy of the training state after ``epoch`` (the rollback target)."""
        return clone_tree(self.training_state(epoch))

    # ---- divergence and interruption ----------------------------------------------------
    def _nonfinite(self, train: dict[str, Tensor], val: Tensor, check_weights: bool) -> Optional[str]:
        """None when the losses (and, before a checkpoint, the weights) are finite, else what is not.

        One device sync per epoch, as the plateau scheduler needs ``val`` on the host anyway;
        the total loss is non-finite whenever a component is. Weights are checked only before
        a checkpoint, so a written checkpoint is always a good one.
        """
        if bool(torch.isfinite(train["train"]).all() & torch.isfinite(val).all()):
            if not check_weights:
                return None
            bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
            return f"finite weights, but got non-finite values in {', '.join(bad)}" if bad else None
        values = {**{f"loss/{k}": float(train[k]) for k in COMPONENTS},
                  "loss/train": float(train["train"]), "loss/val": float(val)}
        return "finite losses, but got " + ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))

    def _diverged(self, epoch: int, problem: str, bar) -> int:
        """Stop with a ``TrainingError``, or (``on_nonfinite: rollback``) restore the last good
        state with half the lr, at most ``MAX_ROLLBACKS`` times; returns the epoch to run next."""
        where = f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint written yet"
        msg = f"epoch {epoch}: expected {problem}; {where}"
        if self.cfg.on_nonfinite != "rollback":
            self._save_best_quietly()
            raise TrainingError(f"{msg}; lower trainer.lr or set trainer.on_nonfinite=rollback")
        if self.rollbacks >= MAX_ROLLBACKS:
            self._save_best_quietly()
            raise TrainingError(f"{msg}; gave up after {MAX_ROLLBACKS} rollbacks (lr {self._lr():.3g}); "
                                f"lower trainer.lr")
        good = self._good
        self._restore(good)
        self.rollbacks += 1
        for group in self.opt.param_groups:
            set_group_value(group, "lr", float(group["lr"]) * 0.5)
        if hasattr(self.sched, "_last_lr"):
            self.sched._last_lr = [float(g["lr"]) for g in self.opt.param_groups]
        self._good = self._snapshot(good["epoch"])  # the next rollback halves again from here
        self.logger.truncate_after(good["epoch"])
        self.logger.flush()
        self.history = [h for h in self.history if h["epoch"] <= good["epoch"]]
        target = f"the state after epoch {good['epoch']}" if good["epoch"] >= 0 else "the initial state"
        warnings.warn(f"{msg}; rolled back to {target} and halved the lr to {self._lr():.3g} "
                      f"(rollback {self.rollbacks} of {MAX_ROLLBACKS})", RuntimeWarning, stacklevel=3)
        if bar is not None:
            bar.n = self.start_epoch
            bar.refresh()
        return self.start_epoch

    def _save_best_quietly(self) -> None:
        """Before a divergence error: keep the best epoch so far (a failed write changes
        nothing about the error being raised)."""
        try:
            self.save_best()
        except OutputError:
            pass

    def _lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def _interrupted(self, epoch: int, signum: int) -> TrainingInterrupted:
        """The exception ending a run on a signal, after its checkpoint was written."""
        self.logger.flush()
        return TrainingInterrupted(
            f"interrupted by {signal_name(signum)} after epoch {epoch}; checkpoint written: {self.last_checkpoint}; "
            f"resume with: {resume_command(self.run_dir)}", signum, epoch, self.last_checkpoint)

    def _progress(self):
        if not self.cfg.progress or not self.strategy.is_writer:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.cfg.max_epochs, initial=self.start_epoch, desc="train", unit="ep",
                    mininterval=0.5, dynamic_ncols=True)
