"""The training engines (``trainer.engine``), the one mini-batch loop, and how one is picked.

- ``FusedEngine``: the hand-derived step of ``fastpath`` (no autograd) on flat parameters,
  run by an execution strategy: ``Eager``, ``Compiled`` (``torch.compile``) or ``Captured``
  (whole epochs as one CUDA graph; runnable uncaptured on any device, as the tests do).
- ``ReferenceEngine`` (``reference``): autograd with the original's double-backward
  penalty and torch's Adam: the oracle the fused engine is tested against.
- ``batch_loop``: the only mini-batch loop (distributed training uses it too).
- ``choose_engine`` and ``resolve_device``: what ``auto`` means on this device and job.

Both engines train an ``EnsembleNet`` as they train one network (its weights have a leading
member dimension): the loss is the sum over members of each member's loss, the logged losses
and the validation MSE (the plateau scheduler's signal) are the members' mean, and
``MemberRows`` weighs each member's rows by its bootstrap draws and gives the model its
calibration rows.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, Optional, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainerConfig
from ..errors import ConfigError, TrainingError
from ..model import losses
from ..model.ensemble import EnsembleNet
from ..model.network import RegressionNet
from ..model.registry import Loss, loss_in_effect
from .fastpath import DirectAdam, FlatParams, MLPStepMath, copy_forward, members_of
from .plateau import DevicePlateau

COMPONENTS = ("reconstruction", "l1", "l2", "grad_penalty")
COMPILE_ROW_EPOCHS = 2e8   # auto compiles on CPU from rows x epochs >= this (benchmarks/RESULTS.md)
SMALL_STEP = 1 << 16       # activations up to this many elements: one CPU thread (see ThreadChoice); measured
                           # on 2 cores: the example network at 1,200 and 2,500 rows as fast or faster timed
                           # than on one thread, an 8-member ensemble at 194 rows (99k elements) 35% faster
SMALL_JOB_ROWS = 4096      # device auto: uncaptured GPU steps lose to the CPU up to about this many rows
Losses = tuple[Tensor, Tensor]  # (total, stacked COMPONENTS)


class Engine(Protocol):
    """What the Trainer and the distributed strategy call; every engine implements all of it."""

    name: str

    def step(self, x: Tensor, yn: Tensor, epoch: int) -> dict[str, Tensor]: ...

    def batch(self, x: Tensor, yn: Tensor, idx: Tensor, epoch: int) -> Losses: ...

    def train_epoch(self, x: Tensor, yn: Tensor, epoch: int, batch_size: int,
                    generator: torch.Generator) -> dict[str, Tensor]: ...

    def validate(self) -> Tensor: ...

    def on_state_loaded(self) -> None: ...


def batch_loop(step: Callable[[Tensor], Losses], perm: Tensor, batch_size: int) -> Losses:
    """The mini-batch loop: ``step(rows)`` per slice of ``perm``; returns row-weighted means."""
    n = perm.shape[0]
    total = parts = None
    for k in range(0, n, batch_size):
        idx = perm[k:k + batch_size]
        t, p = step(idx)
        m = idx.numel()
        total, parts = (t * m, p * m) if total is None else (total.add_(t, alpha=m), parts.add_(p, alpha=m))
    return total / n, parts / n


def as_dict(total: Tensor, parts: Tensor) -> dict[str, Tensor]:
    return {"train": total, **dict(zip(COMPONENTS, parts.unbind()))}


def mse(pred: Tensor, yn: Tensor) -> Tensor:
    """Mean squared error; for an ensemble's (K, N, out) outputs the members' mean MSE."""
    return F.mse_loss(pred, yn if pred.shape == yn.shape else yn.expand_as(pred))


TRAINING_ROWS_NOTE = ("model.kind ensemble: no held-out rows (data.train_split is 1.0 and model.bootstrap is false), "
                      "so its std is calibrated on the training rows and its intervals under-cover new points; set "
                      "data.train_split < 1 or model.bootstrap: true for calibrated intervals")


class MemberRows:
    """The weight of each row in each member's loss, and the rows its std is calibrated on.

    For one network (and an ensemble without ``bootstrap``) every member sees the training
    rows as they are: ``weights`` is None. With ``bootstrap``, member k trains on its
    resample (``EnsembleNet.bootstrap_rows``), written as (K, N, 1) draw counts on the
    original rows (``EnsembleNet.bootstrap_weights``) that every loss term is weighed by, so
    the members share one forward pass of the rows, which also scores the validation rows
    when they are the training rows (out-of-bag rows included, as the best epoch needs).
    ``calibrate_on`` gives the ensemble its calibration rows (see ``model/ensemble.py``):
    the validation rows when they differ from the training rows, else the out-of-bag rows
    of a bootstrap, else the training rows.
    """

    def __init__(self, model: nn.Module, val_x: Tensor, val_yn: Tensor):
        self.model = model if isinstance(model, EnsembleNet) else None
        self.bootstrap = self.model is not None and self.model.bootstrap
        self.val_x, self.val_yn = val_x, val_yn
        self._seen: Optional[Tensor] = None
        self._weights: Optional[Tensor] = None

    def weights(self, x: Tensor) -> Optional[Tensor]:
        """(K, N, 1) draw counts of the N rows of ``x`` (drawn once), or None without bootstrap."""
        if not self.bootstrap:
            return None
        w = self._weights
        if w is None or w.shape[1] != x.shape[0] or w.device != x.device or w.dtype != x.dtype:
            w = self._weights = self.model.bootstrap_weights(x.shape[0], x.device, x.dtype)
        return w

    def calibrate_on(self, x: Tensor, yn: Tensor, same_as_val: bool) -> None:
        """Give the ensemble its calibration rows, once per training tensor ``x`` (raw inputs)."""
        if self.model is None or self._seen is x:
            return
        self._seen, m = x, self.model
        with torch.no_grad():
            if not same_as_val:
                m.set_calibration_rows(self.val_x, m.to_units(self.val_yn), "validation rows")
            elif self.bootstrap:
                m.set_calibration_rows(x, m.to_units(yn), "out-of-bag rows", self.weights(x)[..., 0] == 0)
            else:
                m.set_calibration_rows(x, m.to_units(yn), "training rows")
                warnings.warn(TRAINING_ROWS_NOTE, UserWarning, stacklevel=4)


def same_rows(x: Tensor, v: Tensor) -> bool:
    """Whether ``x`` holds exactly the rows of ``v``."""
    return x is v or (x.shape == v.shape and x.device == v.device and bool(torch.equal(x, v)))


# ---- the reference -------------------------------------------------------------------------------
class ReferenceEngine:
    """Autograd: the original double-backward penalty and torch's Adam (the test oracle)."""

    name = "reference"

    def __init__(self, model: RegressionNet | EnsembleNet, cfg: TrainerConfig, opt: torch.optim.Optimizer,
                 val_x: Tensor, val_yn: Tensor):
        self.model, self.cfg, self.opt = model, cfg, opt
        self.params: Sequence[Tensor] = list(model.parameters())
        self.val_x, self.val_yn = val_x, val_yn
        self.members, self.rows = members_of(model), MemberRows(model, val_x, val_yn)

    def step(self, x: Tensor, yn: Tensor, epoch: int) -> dict[str, Tensor]:
        self.rows.calibrate_on(x, yn, same_rows(x, self.val_x))
        return as_dict(*self._update(x, yn, self.rows.weights(x), epoch))

    def batch(self, x: Tensor, yn: Tensor, idx: Tensor, epoch: int) -> Losses:
        self.rows.calibrate_on(x, yn, same_rows(x, self.val_x))
        w = self.rows.weights(x)
        return self._update(x[idx], yn[idx], None if w is None else w[:, idx], epoch)

    def train_epoch(self, x: Tensor, yn: Tensor, epoch: int, batch_size: int,
                    generator: torch.Generator) -> dict[str, Tensor]:
        perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
        return as_dict(*batch_loop(lambda idx: self.batch(x, yn, idx, epoch), perm, batch_size))

    @torch.no_grad()
    def validate(self) -> Tensor:
        return mse(self.model.forward_normalized(self.val_x), self.val_yn)

    def on_state_loaded(self) -> None:
        """Nothing is cached."""

    def _update(self, x: Tensor, yn: Tensor, w: Optional[Tensor], epoch: int) -> Losses:
        total, parts = self.loss(x, yn, epoch, w)
        self.opt.zero_grad(set_to_none=True)
        (total * self.members if self.members > 1 else total).backward()  # members: the sum of their losses
        self.opt.step()
        return total.detach(), parts.detach()

    def loss(self, x: Tensor, yn: Tensor, epoch: int, w: Optional[Tensor] = None) -> Losses:
        """Total weighted loss and the stacked components for raw inputs and training-unit targets
        (an ensemble's: the means over its members, each member differentiated by its own inputs,
        each row weighed by its bootstrap draws ``w`` (K, N, 1) when given)."""
        c = self.cfg
        if c.grad_weight == 0:
            pred = self.model.forward_normalized(x)
            gp = pred.new_zeros(())
        else:
            if self.members > 1 and x.dim() == 2:
                x = x.unsqueeze(0).expand(self.members, -1, -1)
            x = x.detach().clone().requires_grad_(True)
            pred = self.model.forward_normalized(x)
            gp = losses.grad_penalty_double_backward(pred, x, losses.gp_input_scale(self.model.input_std,
                                                                                     c.grad_space), w)
        rec = losses.reconstruction_loss(pred, yn, c.recon_type, c.recon_delta, epoch, c.recon_start_epoch, w)
        parts = torch.stack([rec, losses.l1_penalty(self.params), losses.l2_penalty(self.params), gp])
        total = c.recon_weight * rec + c.l1_weight * parts[1] + c.l2_weight * parts[2] + c.grad_weight * gp
        return total, parts


# ---- threads ---------------------------------------------------------------------------------------
class _Threads:
    """Run a block with ``n`` intra-op threads (None: leave torch's setting), then restore it;
    with a ``choice``, report the block's wall time for thread count ``n``."""

    __slots__ = ("n", "before", "choice", "t0")

    def __init__(self, n: Optional[int], choice: Optional["ThreadChoice"] = None):
        self.n, self.choice, self.before = n, choice, 0

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        if self.n is not None and self.n != self.before:
            torch.set_num_threads(self.n)
        if self.choice is not None:
            self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if self.n is not None and self.n != self.before:
            torch.set_num_threads(self.before)
        if self.choice is not None and exc[0] is None:
            self.choice.record(self.n, time.perf_counter() - self.t0)


def activation_width(model: nn.Module) -> int:
    """Activation elements per row of a step: the widest layer times the members trained
    together (what ``ThreadChoice`` weighs against ``SMALL_STEP``)."""
    return max(list(model.layers) + [model.input_dim]) * members_of(model)


class ThreadChoice:
    """How many intra-op threads a CPU engine's steps use.

    ``fixed`` (``trainer.threads: N``): always N. Small steps (up to ``SMALL_STEP`` activation
    elements, e.g. the original pipeline's 213-row example) use one: on shared cores a second thread turns a 14 us
    matrix product into milliseconds. Large steps use whichever of torch's setting and one
    thread ran an epoch faster (alternating epochs, two each after a warm-up; measured again
    every ``RETUNE`` epochs and after three epochs ``SLOWER`` than the best). ``timed=False``
    (``trainer.deterministic``, a resume): torch's setting, nothing measured.
    """

    RETUNE = 500
    TRIALS = 2
    SLOWER = 1.5

    def __init__(self, device: torch.device, width: int, fixed: Optional[int] = None, timed: bool = True):
        self.cpu, self.width, self.fixed, self.timed = device.type == "cpu", width, fixed, timed
        self.default = torch.get_num_threads()  # the caller's setting (trials switch it)
        self._warm = False
        self._reset()

    def _reset(self) -> None:
        self.best, self._times, self._since, self._slow, self._ref = None, {}, 0, 0, float("inf")

    def small(self, rows: int) -> bool:
        return rows * self.width <= SMALL_STEP

    def use(self, rows: int, timed: bool = False) -> _Threads:
        """The context to run a step over ``rows`` rows in (``timed``: an epoch to measure)."""
        if not self.cpu:
            return _Threads(None)
        if self.fixed is not None or self.small(rows):
            return _Threads(self.fixed or 1)
        if not self.timed:
            return _Threads(None)
        if self.best is not None:
            self._since += timed
            if self._since >= self.RETUNE:
                self._reset()
            else:
                return _Threads(self.best, self if timed else None)
        if not timed:
            return _Threads(None)
        options = (self.default, 1) if self.default > 1 else (1,)
        return _Threads(min(options, key=lambda n: len(self._times.get(n, []))), self)

    def record(self, n: int, seconds: float) -> None:
        """An epoch's wall time with ``n`` threads: a trial, or a check of the chosen setting."""
        if not self._warm:  # the first large epoch also allocates buffers: not a fair trial
            self._warm = True
            return
        if self.best is not None:  # compare with the best epoch seen since the choice
            self._ref = min(self._ref, seconds)
            self._slow = self._slow + 1 if seconds > self.SLOWER * self._ref else 0
            if self._slow >= 3:
                self._reset()
            return
        self._times.setdefault(n, []).append(seconds)
        counts = [len(v) for v in self._times.values()]
        if len(counts) == (2 if self.default > 1 else 1) and min(counts) >= self.TRIALS:
            self.best = min(self._times, key=lambda k: min(self._times[k]))
            self._ref = min(self._times[self.best])

    def decided(self, rows: int) -> bool:
        """Whether steps over ``rows`` rows have a settled thread count (compile now)."""
        return (not self.cpu or not self.timed or self.fixed is not None or self.small(rows)
                or self.best is not None or self.default == 1)

    def describe(self, rows: int) -> object:
        """The thread count of steps over ``rows`` rows, or how it is chosen (for the run's record)."""
        if not self.cpu:
            return "device"
        if self.fixed is not None or self.small(rows):
            return self.fixed or 1
        return f"timed: 1 or {self.default}" if self.timed and self.default > 1 else self.default


# ---- the fused engine --------------------------------------------------------------------------------
class FusedEngine:
    """The hand-derived step (``fastpath``) on flat parameters, run by an execution strategy.

    Per update: forward pass with the input-gradient sweep, the exact gradient into the flat
    grad buffer, one fused Adam update (``DirectAdam``). A full-batch epoch keeps the forward
    pass at the updated weights: the validation MSE when the validation rows are the training
    rows (the original pipeline's ``train_split: 1.0``) and the next epoch's forward pass, so an epoch
    costs one forward pass, not two (recomputed when the weights' version counter moved: a
    rollback, a resume). Mini-batches are gathered into reused buffers by index.
    """

    def __init__(self, model: RegressionNet | EnsembleNet, cfg: TrainerConfig, opt: torch.optim.Optimizer,
                 val_x: Tensor, val_yn: Tensor, execution: str = "eager", sched: Optional[DevicePlateau] = None,
                 threads: Optional[ThreadChoice] = None):
        self.model, self.cfg, self.opt, self.name = model, cfg, opt, execution
        self.fp = FlatParams(model)
        self.math = MLPStepMath(model, self.fp, cfg)
        self.adam = DirectAdam(opt)
        self.val_x, self.val_yn = val_x, val_yn
        self.rows = MemberRows(model, val_x, val_yn)
        self.threads = threads or ThreadChoice(val_x.device, activation_width(model))
        self.run = {"eager": Eager, "compiled": Compiled, "captured": Captured}[execution](self, sched)
        self._buffers: dict[int, tuple[Optional[Tensor], ...]] = {}
        self.val_xn = self.math.normalize(val_x)
        self._norm: tuple[Optional[Tensor], int, Optional[Tensor]] = (None, -1, None)
        self._fw = None  # the forward pass of the full-batch rows at the current weights
        self.on_state_loaded()

    def on_state_loaded(self) -> None:
        """Re-read normalization (in place) and drop the kept forward pass (after a state load)."""
        self.math.reset_constants()
        with torch.no_grad():
            self.val_xn.copy_(self.math.normalize(self.val_x))
            src, _, xn = self._norm
            if src is not None:
                xn.copy_(self.math.normalize(src))
        self._fw_key: tuple = (None, None)  # (rows, weights version) the kept forward pass is of
        self._same: tuple[Optional[Tensor], bool] = (None, False)
        self._val: Optional[Tensor] = None

    # ---- the interface ----------------------------------------------------------------------
    def step(self, x: Tensor, yn: Tensor, epoch: int) -> dict[str, Tensor]:
        """A full-batch epoch: one update on all rows; returns detached ``train`` and components."""
        loss, same = self._loss(epoch), self._is_val(x)
        xn, yn, w = self._member_rows(x, yn, same)
        with self.threads.use(x.shape[0], timed=True):
            if self.run.pipelined:
                self._keep_forward(x, xn)
            key = ("full", loss.name, same, id(xn), id(yn), id(w))
            out = self.run.epoch(key, lambda: self._full_body(xn, yn, w, loss, same))
        self._fw_key = (x, self.fp.version())
        return self._finish(*out)

    def batch(self, x: Tensor, yn: Tensor, idx: Tensor, epoch: int) -> Losses:
        """One update on rows ``idx`` (distributed training's per-batch call)."""
        xn, yn, w = self._member_rows(x, yn, self._is_val(x))
        return self._batch(xn, yn, w, idx, self._loss(epoch))

    def train_epoch(self, x: Tensor, yn: Tensor, epoch: int, batch_size: int,
                    generator: torch.Generator) -> dict[str, Tensor]:
        """A shuffled pass in mini-batches (one ``randperm`` of the rows from ``generator``)."""
        n = x.shape[0]
        perm = self.run.fixed(torch.randperm(n, device=x.device, generator=generator))
        loss, (xn, yn, w) = self._loss(epoch), self._member_rows(x, yn, self._is_val(x))
        self.run.dynamic = n % batch_size != 0
        with self.threads.use(min(n, batch_size), timed=True):
            out = self.run.epoch(("batches", loss.name, n, batch_size, id(xn), id(yn), id(w)), lambda: (
                *batch_loop(lambda idx: self._batch(xn, yn, w, idx, loss), perm, batch_size), self._val_mse()))
        return self._finish(*out)

    def validate(self) -> Tensor:
        """The validation MSE (training units) of the weights after the last epoch."""
        val, self._val = self._val, None
        if val is None:
            with self.threads.use(self.val_x.shape[0]):
                val = self._val_mse()
        return val

    # ---- epoch pieces ---------------------------------------------------------------------------
    def _full_body(self, xn: Tensor, yn: Tensor, w: Optional[Tensor], loss: Loss,
                   same: bool) -> tuple[Tensor, Tensor, Tensor]:
        if not self.run.pipelined:
            total, parts = self._grad(xn, yn, w, loss)
            self._adam_step()
            return total, parts, self._val_mse()
        total, parts = self.math.backward(self._fw, yn, loss, w)
        self._adam_step()
        self._store_forward(self.math.forward(xn))
        return total, parts, mse(self._fw.y, self.val_yn) if same else self._val_mse()

    def _batch(self, xn: Tensor, yn: Tensor, w: Optional[Tensor], idx: Tensor, loss: Loss) -> Losses:
        out = self._grad(*self._gather(xn, yn, w, idx), loss)
        self._adam_step()
        self._fw_key = (None, None)  # Adam writes through .data, which no version counter sees
        return out

    def _grad(self, xb: Tensor, yb: Tensor, wb: Optional[Tensor], loss: Loss) -> Losses:
        math = self.math
        if wb is None:
            return self.run.call(("step", loss.name), lambda a, b: math.backward(math.forward(a), b, loss), xb, yb)
        return self.run.call(("step", loss.name, "weighted"),
                             lambda a, b, c: math.backward(math.forward(a), b, loss, c), xb, yb, wb)

    def _val_mse(self) -> Tensor:
        return self.run.call(("val",), lambda a, b: mse(self.math.predict(a), b), self.val_xn, self.val_yn)

    def _finish(self, total: Tensor, parts: Tensor, val: Tensor) -> dict[str, Tensor]:
        self._val = val
        return as_dict(total, parts)

    def _loss(self, epoch: int) -> Loss:
        return loss_in_effect(self.cfg.recon_type, epoch, self.cfg.recon_start_epoch)

    def _adam_step(self) -> None:
        if not self.fp.intact():
            if self.fp.params[0].data_ptr() != self.fp.flat.data_ptr():
                raise TrainingError("fast step: expected the model's weights to stay in the engine's flat "
                                    "buffer, but they were replaced (model moved or re-created); build a new Trainer")
            self.fp.attach_grads()
        self.adam.step()

    # ---- kept tensors ---------------------------------------------------------------------------
    def _keep_forward(self, x: Tensor, xn: Tensor) -> None:
        """The kept forward pass, recomputed unless it is of ``x`` at the current weights."""
        src, version = self._fw_key
        if self._fw is None or src is not x or version != self.fp.version():
            self._store_forward(self.math.forward(xn))

    def _store_forward(self, fw) -> None:
        """Keep ``fw`` (into the kept tensors for a captured graph, which reads those)."""
        if self.run.static and self._fw is not None:
            copy_forward(self._fw, fw)
        else:
            self._fw = fw

    def _member_rows(self, x: Tensor, yn: Tensor, same: bool) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """Normalized inputs, targets and the members' row weights (``MemberRows``)."""
        self.rows.calibrate_on(x, yn, same)
        return self._normalized(x), yn, self.rows.weights(x)

    def _normalized(self, x: Tensor) -> Tensor:
        """Normalized inputs, computed once per data tensor (not per epoch)."""
        src, version, xn = self._norm
        if src is x and version == x._version:
            return xn
        xn = self.math.normalize(x)
        self._norm = (x, x._version, xn)
        return xn

    def _is_val(self, x: Tensor) -> bool:
        """Whether ``x`` holds exactly the validation rows (checked once per tensor)."""
        src, same = self._same
        if src is not x:
            same = same_rows(x, self.val_x)
            self._same = (x, same)
        return same

    def _gather(self, xn: Tensor, yn: Tensor, w: Optional[Tensor],
                idx: Tensor) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """Rows ``idx`` of the normalized inputs, targets and row weights, into buffers reused
        every epoch (rows are dimension -2: the weights lead with the members)."""
        m = idx.numel()
        if m not in self._buffers:
            self._buffers[m] = tuple(None if t is None else t.new_empty((*t.shape[:-2], m, t.shape[-1]))
                                     for t in (xn, yn, w))
        return tuple(None if t is None else torch.index_select(t, -2, idx, out=buf)
                     for t, buf in zip((xn, yn, w), self._buffers[m]))


# ---- execution strategies of the fused engine -----------------------------------------------------
class Eager:
    """Run the step's functions and the epoch body as they are."""

    pipelined, static = True, False

    def __init__(self, engine: FusedEngine, sched=None):
        self.engine, self.dynamic = engine, False

    def call(self, key: tuple, fn: Callable, *args: Tensor):
        return fn(*args)

    def epoch(self, key: tuple, body: Callable[[], tuple]) -> tuple:
        return body()

    def fixed(self, perm: Tensor) -> Tensor:
        return perm


class Compiled(Eager):
    """The step (forward and backward as one function, so no kept forward pass) and
    validation under ``torch.compile``: inductor fuses the step's ~40 elementwise passes, about
    halving large steps; compiling takes ~1 minute on a small CPU (once per loss and batch
    shape). A compiler failure is an error for ``trainer.engine: compiled``, a warning and eager
    steps under ``auto``. Large CPU steps run eagerly until ``ThreadChoice`` has decided.
    """

    pipelined = False

    def __init__(self, engine: FusedEngine, sched=None):
        super().__init__(engine)
        self.strict = engine.cfg.engine == "compiled"
        self.failed = False
        self._fns: dict[tuple, Callable] = {}

    def call(self, key: tuple, fn: Callable, *args: Tensor):
        """``fn(*args)`` compiled once per key; eager before the thread count is settled or after a failure."""
        if self.failed or not self.engine.threads.decided(args[0].shape[0]):
            return fn(*args)
        try:
            compiled = self._fns.get(key)
            if compiled is None:
                dynamic = self.dynamic if key[0] == "step" else False
                compiled = self._fns[key] = torch.compile(fn, fullgraph=True, dynamic=dynamic)
            return compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly or stop
            text = str(exc).strip()
            reason = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
            if self.strict:
                raise TrainingError(f"trainer.engine: expected torch.compile to work on this machine, but it "
                                    f"failed ({reason}); use trainer.engine=eager") from None
            warnings.warn(f"torch.compile failed ({reason}); training with the eager fused step", RuntimeWarning)
            self.failed = True
            return fn(*args)


class Captured(Eager):
    """Whole epochs as one CUDA graph: updates, validation and the plateau scheduler.

    The body is the eager epoch plus ``DevicePlateau.device_step`` and a copy of the losses
    into one output vector; the permutation is drawn eagerly and copied into a fixed buffer.
    The first ``WARMUP`` epochs of a body run on a side stream (capture needs warm kernels),
    the next is captured, later ones replay it. State loading updates every tensor a graph
    reads in place, so graphs survive rollbacks and resumes. Without CUDA the bodies run
    eagerly: how the CPU tests check this.
    """

    static = True
    WARMUP = 2

    def __init__(self, engine: FusedEngine, sched: Optional[DevicePlateau] = None):
        super().__init__(engine)
        if not isinstance(sched, DevicePlateau):
            raise TypeError("captured execution: expected the DevicePlateau scheduler from make_scheduler")
        self.sched, self.capture = sched, engine.val_x.device.type == "cuda"
        self._graphs: dict[tuple, object] = {}
        self._runs: dict[tuple, int] = {}
        self._pool = None
        self._out = engine.val_x.new_zeros(2 + len(COMPONENTS))  # [total, components..., val]
        self._perm: Optional[Tensor] = None

    def fixed(self, perm: Tensor) -> Tensor:
        if self._perm is None or self._perm.shape != perm.shape:
            self._perm = torch.empty_like(perm)
        return self._perm.copy_(perm)

    def epoch(self, key: tuple, body: Callable[[], tuple]) -> tuple:
        """Run an epoch body: eagerly while warming up (or without capture), else by replay."""
        def full() -> None:
            total, parts, val = body()
            self.sched.device_step(val)
            torch.cat([total.reshape(1), parts, val.reshape(1)], out=self._out)

        runs = self._runs.get(key, 0)
        if not self.capture:
            full()
        elif runs < self.WARMUP:
            self._side_stream(full)
        else:
            if key not in self._graphs:
                self._graphs[key] = self._capture_graph(full)
            graph = self._graphs[key]
            graph.replay() if graph is not None else full()
        self._runs[key] = runs + 1
        out = self._out.clone()
        val = out[-1]
        self.sched.mark_applied(val)  # the Trainer's sched.step(val) only counts the epoch
        return out[0], out[1:-1], val

    @staticmethod
    def _side_stream(body: Callable[[], None]) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            body()
        torch.cuda.current_stream().wait_stream(stream)

    def _capture_graph(self, body: Callable[[], None]):
        """Record ``body`` (capture runs nothing; the caller replays it). If capture fails,
        warn and return None: the epochs then run the same body eagerly (correct, slower)."""
        torch.cuda.synchronize()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool):
                body()
        except RuntimeError as exc:
            torch.cuda.synchronize()
            warnings.warn(f"CUDA graph capture failed ({str(exc).strip().splitlines()[0]}); running the epochs "
                          f"eagerly", RuntimeWarning)
            return None
        return graph


# ---- choosing and building an engine ---------------------------------------------------------------
def choose_engine(cfg: TrainerConfig, device: torch.device, n_train: int, distributed: bool = False) -> str:
    """The engine ``trainer.engine`` asks for on this device and job (``auto`` resolved).

    ``auto``: ``compiled`` on CPU from ``COMPILE_ROW_EPOCHS`` (compiling takes ~1 minute on a
    small CPU, then halves the step time), else ``eager``; never ``captured`` until a GPU run
    has verified it (``benchmarks/gpu_check.sh``). Distributed runs use ``eager`` (or
    ``reference``): compiled and captured steps could bypass the all-reduce pre-hook.
    """
    name = cfg.engine
    if name == "captured" and device.type != "cuda":
        raise ConfigError(f"trainer.engine: expected 'captured' only with a CUDA device, but the device is "
                          f"{device.type}; use trainer.engine=auto or eager")
    if distributed:
        return "reference" if name == "reference" else "eager"
    if name != "auto":
        return name
    return "compiled" if device.type == "cpu" and n_train * cfg.max_epochs >= COMPILE_ROW_EPOCHS else "eager"


def resolve_device(name: str, engine: str = "auto", rows: Optional[int] = None) -> torch.device:
    """The device for ``trainer.device`` (``rows``: training rows, when known). ``auto``: cpu
    without CUDA, or for at most ``SMALL_JOB_ROWS`` rows unless ``engine`` is ``captured``
    (uncaptured GPU steps are launch-bound: the example config's step runs ~130 epochs/s on an H100,
    ~500 on one CPU core); else cuda."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        small = rows is not None and rows <= SMALL_JOB_ROWS
        return torch.device("cpu" if engine != "captured" and small else "cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device: expected a usable CUDA device for 'cuda', but torch sees none; "
                          "use trainer.device=cpu or auto")
    return torch.device(name)


def make_optimizer(params: Sequence[Tensor], cfg: TrainerConfig, engine: str, device: torch.device):
    """Adam as the engine needs it: torch's default for the reference, fused for the fused
    engine, with a device-tensor lr (capturable on CUDA) when captured."""
    if engine == "reference":
        return torch.optim.Adam(params, lr=cfg.lr)
    if engine != "captured":
        return torch.optim.Adam(params, lr=cfg.lr, fused=True)
    lr = torch.tensor(cfg.lr, dtype=params[0].dtype, device=device)
    if device.type != "cuda":
        opt = torch.optim.Adam(params, lr=lr, fused=True)  # the same program run eagerly (tests)
    else:
        try:
            opt = torch.optim.Adam(params, lr=lr, fused=True, capturable=True)
        except (RuntimeError, ValueError):
            opt = torch.optim.Adam(params, lr=lr, foreach=True, capturable=True)
    _keep_tensor_lr(opt, lr)
    return opt


def _keep_tensor_lr(opt: torch.optim.Optimizer, lr: Tensor) -> None:
    """Checkpoints of a tensor-lr optimizer hold a plain float lr (so any engine, on any
    device, can load them), and loading a state dict keeps the tensor the captured graph
    reads: its value is updated in place."""
    def to_float(optimizer, state: dict) -> dict:
        for group in state["param_groups"]:
            if isinstance(group["lr"], Tensor):
                group["lr"] = float(group["lr"])
        return state

    def keep_tensor(optimizer) -> None:
        group = optimizer.param_groups[0]
        if group["lr"] is not lr:
            with torch.no_grad():
                lr.fill_(float(group["lr"]))
            group["lr"] = lr

    opt.register_state_dict_post_hook(to_float)
    opt.register_load_state_dict_post_hook(keep_tensor)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainerConfig, engine: str):
    """ReduceLROnPlateau on the validation loss (``DevicePlateau`` when captured)."""
    kw = dict(factor=cfg.lr_factor, patience=cfg.lr_patience, threshold=cfg.lr_threshold, min_lr=cfg.min_lr)
    if engine == "captured":
        return DevicePlateau(opt, **kw)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", threshold_mode="rel", **kw)


def make_engine(model: RegressionNet | EnsembleNet, cfg: TrainerConfig, opt: torch.optim.Optimizer, val_x: Tensor,
                val_yn: Tensor, engine: str, sched=None, threads: Optional[ThreadChoice] = None) -> Engine:
    """The engine ``choose_engine`` named (never ``auto``)."""
    if engine == "reference":
        return ReferenceEngine(model, cfg, opt, val_x, val_yn)
    return FusedEngine(model, cfg, opt, val_x, val_yn, engine, sched, threads)
