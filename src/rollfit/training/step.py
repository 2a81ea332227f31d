"""The training step engines (``trainer.compile``) and how the Trainer picks one.

Every engine has the same interface: ``step(x, yn, epoch)`` takes one optimizer step on a
batch and returns detached loss tensors (``train`` and ``COMPONENTS``), ``validate()``
returns the validation MSE in training units of the current weights as a tensor. Engines
may add ``train_epoch(x, yn, epoch, batch_size, generator)`` (a whole mini-batch epoch)
and ``on_state_loaded()`` (called after the Trainer loads a state).

- ``off``: ``StepEngine``, autograd with the original double-backward penalty and torch's
  Adam; the reference the others are tested against.
- ``jacobian``: ``StepEngine`` with the forward-Jacobian penalty (one backward pass).
- ``fused``: ``FusedEngine``, the hand-derived step of ``fastpath`` (no autograd), flat
  parameters, fused Adam called directly, validation's forward pass reused by the next step.
- ``compile``: ``CompiledEngine``, the same step under ``torch.compile``.
- ``cudagraph``: ``GraphEngine``, whole epochs (steps, validation, plateau scheduler) as
  one CUDA graph, with a capturable Adam whose lr is a device tensor (``DevicePlateau``).
- ``auto``: ``choose_mode``: cudagraph on CUDA; on CPU fused, or compile when the run is
  long enough for compilation to pay.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import TrainerConfig
from ..errors import ConfigError, TrainingError
from ..model import losses
from ..model.network import RegressionNet
from .fastpath import DirectAdam, FlatParams, Forward, MLPStepMath, copy_forward, recon_kind
from .plateau import DevicePlateau

COMPONENTS = ("reconstruction", "l1", "l2", "grad_penalty")


class StepEngine:
    """Eager step over resident tensors; ``val_x``/``val_yn`` are the validation rows."""

    def __init__(self, model: RegressionNet, cfg: TrainerConfig, opt: torch.optim.Optimizer,
                 val_x: Tensor, val_yn: Tensor):
        self.model, self.cfg, self.opt = model, cfg, opt
        self.params: Sequence[Tensor] = [p for p in model.parameters()]
        self.val_x, self.val_yn = val_x, val_yn
        self.use_jacobian = cfg.compile != "off"

    def step(self, x: Tensor, yn: Tensor, epoch: int) -> dict[str, Tensor]:
        """One optimizer update on a batch; returns detached ``train`` and components."""
        total, parts = self.loss(x, yn, epoch)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        return {"train": total.detach(), **{k: v.detach() for k, v in parts.items()}}

    def loss(self, x: Tensor, yn: Tensor, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Total weighted loss and its components for raw inputs and training-unit targets."""
        c = self.cfg
        pred, gp = self.predict_with_penalty(x)
        rec = losses.reconstruction_loss(pred, yn, c.recon_type, c.recon_delta, epoch, c.recon_start_epoch)
        l1 = losses.l1_penalty(self.params)
        l2 = losses.l2_penalty(self.params)
        total = c.recon_weight * rec + c.l1_weight * l1 + c.l2_weight * l2 + c.grad_weight * gp
        return total, {"reconstruction": rec, "l1": l1, "l2": l2, "grad_penalty": gp}

    def predict_with_penalty(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Prediction and input-gradient penalty (skipped when its weight is 0)."""
        if self.cfg.grad_weight == 0:
            pred = self.model(x)
            return pred, pred.new_zeros(())
        if self.use_jacobian:
            pred, jac = self.model.forward_with_input_jacobian(x)
            return pred, losses.grad_penalty_from_jacobian(jac, self._gp_scale())
        x = x.detach().requires_grad_(True)
        pred = self.model(x)
        return pred, losses.grad_penalty_double_backward(pred, x, self._gp_scale())

    def _gp_scale(self) -> Optional[Tensor]:
        return losses.gp_input_scale(self.model.input_std, self.cfg.grad_space)

    @torch.no_grad()
    def validate(self) -> Tensor:
        """Validation MSE in training units (the plateau scheduler's signal)."""
        return (self.model(self.val_x) - self.val_yn).square().mean()


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


class ThreadChoice:
    """How many intra-op threads a CPU engine's steps use.

    Small steps (activations up to ``SMALL_STEP`` elements, e.g. the seed's 213 rows) use one:
    their kernels take microseconds, a second thread only adds synchronization, and on a
    machine whose cores are shared with other processes that synchronization turns a 14 us
    matrix product into milliseconds. Large steps use whichever of torch's setting and one
    thread ran an epoch faster, measured on alternating epochs (two each, after one warm-up
    epoch). The load of a shared machine changes, so the trials run again every ``RETUNE``
    epochs, and at once when three epochs in a row take ``SLOWER`` times the fastest one
    since the choice. On a busy 2-core machine one thread won by 3-5x at 100k
    rows; when the machine was idle, two threads won by ~1.7x.
    """

    RETUNE = 500
    TRIALS = 2
    SLOWER = 1.5

    def __init__(self, device: torch.device, width: int):
        self.cpu, self.width = device.type == "cpu", width
        self.default = torch.get_num_threads()  # the caller's setting (trials switch it)
        self.best: Optional[int] = None
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
        if self.small(rows):
            return _Threads(1)
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
        return not self.cpu or self.small(rows) or self.best is not None or self.default == 1


class FusedEngine:
    """The hand-derived step (``fastpath``) on flat parameters, eager.

    Per step: one forward pass with the input-gradient sweep, the exact gradient written
    into the flat grad buffer, one fused Adam update (``DirectAdam``). When the validation
    rows are the training rows and the batch is the whole data set (the seed's
    ``train_split: 1.0``), ``validate`` runs the NEXT step's forward pass at the updated
    weights and returns its MSE, and ``step`` reuses that pass: the validation loss is
    still that of the model after the step, and an epoch costs one forward pass instead of
    two. The reuse is dropped whenever the weights changed in between (their version
    counter moved: a rollback, a resume). Mini-batches (``train_epoch``) are gathered by
    index into reused buffers from the normalized inputs, computed once per run.
    """

    pipeline = True  # reuse validation's forward pass as the next step's

    def __init__(self, model: RegressionNet, cfg: TrainerConfig, opt: torch.optim.Optimizer,
                 val_x: Tensor, val_yn: Tensor):
        self.model, self.cfg, self.opt = model, cfg, opt
        self.fp = FlatParams(model)
        self.math = MLPStepMath(model, self.fp, cfg)
        self.adam = DirectAdam(opt)
        self.val_x, self.val_yn = val_x, val_yn
        self.width = max(list(model.layers) + [model.input_dim])
        self.threads = ThreadChoice(val_x.device, self.width)
        self._buffers: dict[int, tuple[Tensor, Tensor]] = {}
        self.val_xn = self.math.normalize(val_x)
        self._norm: tuple[Optional[Tensor], int, Optional[Tensor]] = (None, -1, None)
        self.on_state_loaded()

    def on_state_loaded(self) -> None:
        """Re-read normalization (in place) and drop reused passes (the Trainer calls this
        after loading a state)."""
        self.math.reset_constants()
        with torch.no_grad():
            self.val_xn.copy_(self.math.normalize(self.val_x))
            src, _, xn = self._norm
            if src is not None:
                xn.copy_(self.math.normalize(src))
        self._ahead: Optional[tuple] = None  # (x, weights version, Forward) from validate()
        self._last_x: Optional[Tensor] = None
        self._same: tuple[Optional[Tensor], bool] = (None, False)

    # ---- the interface ----------------------------------------------------------------------
    def step(self, x: Tensor, yn: Tensor, epoch: int) -> dict[str, Tensor]:
        """One optimizer update on a batch; returns detached ``train`` and components."""
        with self.threads.use(x.shape[0], timed=True):
            total, parts = self._step(x, yn, epoch)
        self._last_x = x
        return self._as_dict(total, parts)

    def validate(self) -> Tensor:
        """Validation MSE in training units of the current weights (the scheduler's signal)."""
        x = self._last_x
        with self.threads.use(self.val_x.shape[0]):
            if self.pipeline and x is not None and self._is_val(x):
                fw = self.math.forward(self._normalized(x))
                self._ahead = (x, self.fp.version(), fw)
                return F.mse_loss(fw.y, self.val_yn)
            return self._val_mse()

    def train_epoch(self, x: Tensor, yn: Tensor, epoch: int, batch_size: int,
                    generator: torch.Generator) -> dict[str, Tensor]:
        """A shuffled pass in mini-batches (the Trainer's order: one ``randperm`` of the rows
        from ``generator``); returns row-weighted mean components."""
        n = x.shape[0]
        perm = torch.randperm(n, device=x.device, generator=generator)
        xn = self._normalized(x)
        sums: list[Tensor] = []
        with self.threads.use(min(n, batch_size), timed=True):
            for k in range(0, n, batch_size):
                idx = perm[k:k + batch_size]
                out = self._batch_step(*self._gather(xn, yn, idx), epoch)
                if not sums:
                    sums = [v * idx.numel() for v in out]
                else:
                    for acc, v in zip(sums, out):
                        acc.add_(v, alpha=idx.numel())
        self._last_x = None
        return self._as_dict(sums[0] / n, sums[1] / n)

    # ---- what subclasses replace --------------------------------------------------------------
    def _step(self, x: Tensor, yn: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        fw = self._take_ahead(x)
        if fw is None:
            fw = self.math.forward(self._normalized(x))
        return self._apply(fw, yn, epoch)

    def _batch_step(self, xb: Tensor, yb: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        return self._apply(self.math.forward(xb), yb, epoch)

    def _val_mse(self) -> Tensor:
        return F.mse_loss(self.math.predict(self.val_xn), self.val_yn)

    # ---- pieces -----------------------------------------------------------------------------
    def _kind(self, epoch: int) -> str:
        return recon_kind(self.cfg.recon_type, epoch, self.cfg.recon_start_epoch)

    def _apply(self, fw: Forward, yn: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        """Gradient into the flat buffer, then the optimizer step; returns (total, components)."""
        out = self.math.backward(fw, yn, self._kind(epoch))
        self._optimizer_step()
        return out

    def _optimizer_step(self) -> None:
        if not self.fp.intact():
            if self.fp.params[0].data_ptr() != self.fp.flat.data_ptr():
                raise TrainingError("fast step: expected the model's weights to stay in the engine's flat "
                                    "buffer, but they were replaced (model moved or re-created); build a new Trainer")
            self.fp.attach_grads()
        self.adam.step()

    def _take_ahead(self, x: Tensor) -> Optional[Forward]:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] is x and ahead[1] == self.fp.version():
            return ahead[2]
        return None

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
            v = self.val_x
            same = x is v or (x.shape == v.shape and x.device == v.device and bool(torch.equal(x, v)))
            self._same = (x, same)
        return same

    def _gather(self, xn: Tensor, yn: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Rows ``idx`` of the normalized inputs and targets, into buffers reused every epoch."""
        m = idx.numel()
        if m not in self._buffers:
            self._buffers[m] = (xn.new_empty((m, xn.shape[1])), yn.new_empty((m, yn.shape[1])))
        bx, by = self._buffers[m]
        return torch.index_select(xn, 0, idx, out=bx), torch.index_select(yn, 0, idx, out=by)

    @staticmethod
    def _as_dict(total: Tensor, parts: Tensor) -> dict[str, Tensor]:
        return {"train": total, **dict(zip(COMPONENTS, parts.unbind()))}


class CompiledEngine(FusedEngine):
    """``FusedEngine``'s step and validation compiled with ``torch.compile`` (Inductor).

    Inductor fuses the step's ~40 elementwise passes into a few loops, which about halves
    the time per step on large batches; compiling takes about a minute on a small CPU (once
    per recon-loss kind and batch shape; torch caches compiled code on disk across runs).
    Validation is a separate compiled forward pass, so the forward-pass reuse of the fused
    engine is off. A compilation failure is an error when ``trainer.compile`` is
    ``compile``, and a warning followed by the eager fused step when it is ``auto``. Large
    CPU steps run eagerly until ``ThreadChoice`` has first settled the thread count (so
    compilation happens once, for the chosen count; later trials run compiled code).
    """

    pipeline = False

    def __init__(self, *args, strict: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.strict, self.failed = strict, False
        self._fns: dict[tuple, Callable] = {}
        self._dynamic = False  # compile the step for any batch size (mini-batches of two sizes)

    def train_epoch(self, x: Tensor, yn: Tensor, epoch: int, batch_size: int,
                    generator: torch.Generator) -> dict[str, Tensor]:
        """Mini-batches (the last one is smaller): one step compiled for any batch size."""
        self._dynamic = x.shape[0] % batch_size != 0
        return super().train_epoch(x, yn, epoch, batch_size, generator)

    def _batch_step(self, xb: Tensor, yb: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        if not self._fns and not self.threads.decided(xb.shape[0]):  # first thread trials: eager
            return super()._batch_step(xb, yb, epoch)
        kind = self._kind(epoch)
        math = self.math
        out = self._call(("step", kind), lambda a, b: math.backward(math.forward(a), b, kind), xb, yb)
        if out is None:
            return super()._batch_step(xb, yb, epoch)
        self._optimizer_step()
        return out

    def _step(self, x: Tensor, yn: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        return self._batch_step(self._normalized(x), yn, epoch)

    def _val_mse(self) -> Tensor:
        if not self._fns:  # compiled after the step
            return super()._val_mse()
        math = self.math
        out = self._call(("val",), lambda a, b: (math.predict(a) - b).square().mean(), self.val_xn, self.val_yn)
        return super()._val_mse() if out is None else out

    def _call(self, key: tuple, fn: Callable, *args: Tensor):
        """``fn(*args)`` compiled once per key; None after a compilation failure (auto mode)."""
        if self.failed:
            return None
        try:
            compiled = self._fns.get(key)
            if compiled is None:
                dynamic = self._dynamic if key[0] == "step" else False
                compiled = self._fns[key] = torch.compile(fn, fullgraph=True, dynamic=dynamic)
            return compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly or stop
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if self.strict:
                raise TrainingError(f"trainer.compile: expected torch.compile to work on this machine, but it "
                                    f"failed ({reason}); use trainer.compile=fused") from None
            warnings.warn(f"torch.compile failed ({reason}); training with the eager fused step", RuntimeWarning)
            self.failed = True
            return None


class GraphEngine(FusedEngine):
    """Whole epochs as one CUDA graph: optimizer steps, validation and the plateau scheduler.

    The body of an epoch is the fused engine's code with no host synchronization: for a
    full batch it is backward (from the stored forward pass of the training rows), the
    capturable Adam step, the next forward pass (into the stored buffers), the validation
    MSE, ``DevicePlateau.device_step`` and a copy of the losses into one output vector;
    for mini-batches, per batch an ``index_select`` by a device permutation (drawn eagerly
    with the Trainer's generator and copied into a fixed buffer), forward, backward and
    Adam, then validation and the scheduler. The first ``WARMUP`` epochs of each body run
    eagerly (real epochs, on a side stream, as CUDA graph capture requires); the next one
    is captured and every later epoch is one ``replay()``. Every tensor the graph touches
    (weights, grads, Adam state, lr, scheduler state, data, stored forward pass) is
    updated in place by the Trainer's state loading, so rollbacks and resumes keep the
    graph valid. With ``capture=False`` (any device) the same bodies run eagerly each
    epoch: that is how the CPU tests check this engine.
    """

    WARMUP = 2

    def __init__(self, model: RegressionNet, cfg: TrainerConfig, opt: torch.optim.Optimizer, val_x: Tensor,
                 val_yn: Tensor, sched: DevicePlateau, capture: Optional[bool] = None):
        self._fw: Optional[Forward] = None
        super().__init__(model, cfg, opt, val_x, val_yn)
        self.sched = sched
        self.capture = val_x.device.type == "cuda" if capture is None else capture
        self._graphs: dict[tuple, object] = {}
        self._runs: dict[tuple, int] = {}
        self._pool = None
        self._out = val_x.new_zeros(2 + len(COMPONENTS))  # [total, components..., val]
        self._train: Optional[tuple[Tensor, Tensor]] = None
        self._perm: Optional[Tensor] = None
        self._val: Optional[Tensor] = None

    def on_state_loaded(self) -> None:
        super().on_state_loaded()
        self._fw_version = None  # the stored forward pass must be recomputed (into its buffers)
        self._val = None

    # ---- the interface ----------------------------------------------------------------------
    def step(self, x: Tensor, yn: Tensor, epoch: int) -> dict[str, Tensor]:
        """A full-batch epoch (one replay); any other batch takes the eager fused step."""
        if self._train is None:
            self._train = (x, yn)
        if x is not self._train[0] or yn is not self._train[1]:
            self._val = None
            return super().step(x, yn, epoch)
        xn, same = self._normalized(x), self._is_val(x)
        self._ensure_forward(xn)
        kind = self._kind(epoch)
        return self._run(("full", kind, same), lambda: self._full_body(xn, yn, kind, same))

    def train_epoch(self, x: Tensor, yn: Tensor, epoch: int, batch_size: int,
                    generator: torch.Generator) -> dict[str, Tensor]:
        """A mini-batch epoch: the permutation is drawn eagerly, the rest is one replay."""
        n = x.shape[0]
        perm = torch.randperm(n, device=x.device, generator=generator)
        if self._perm is None or self._perm.shape[0] != n:
            self._perm = torch.empty_like(perm)
        self._perm.copy_(perm)
        xn, kind = self._normalized(x), self._kind(epoch)
        return self._run(("batches", kind, n, batch_size), lambda: self._batch_body(xn, yn, kind, batch_size))

    def validate(self) -> Tensor:
        """The validation MSE computed inside the last epoch (else the eager fused one)."""
        val, self._val = self._val, None
        return val if val is not None else super().validate()

    # ---- epoch bodies (no host synchronization) ----------------------------------------------
    def _full_body(self, xn: Tensor, yn: Tensor, kind: str, val_is_train: bool) -> None:
        fw = self._fw
        total, parts = self.math.backward(fw, yn, kind)
        self.opt.step()
        copy_forward(fw, self.math.forward(xn))
        y_val = fw.y if val_is_train else self.math.predict(self.val_xn)
        self._finish(total, parts, (y_val - self.val_yn).square().mean())

    def _batch_body(self, xn: Tensor, yn: Tensor, kind: str, batch_size: int) -> None:
        n = xn.shape[0]
        total = parts = None
        for k in range(0, n, batch_size):
            idx = self._perm[k:k + batch_size]
            t, p = self.math.backward(self.math.forward(xn.index_select(0, idx)), yn.index_select(0, idx), kind)
            self.opt.step()
            m = idx.numel()
            total, parts = (t * m, p * m) if total is None else (total.add_(t, alpha=m), parts.add_(p, alpha=m))
        self._finish(total / n, parts / n, self._val_mse())

    def _finish(self, total: Tensor, parts: Tensor, val: Tensor) -> None:
        self.sched.device_step(val)
        torch.cat([total.reshape(1), parts, val.reshape(1)], out=self._out)

    # ---- running and capturing ----------------------------------------------------------------
    def _ensure_forward(self, xn: Tensor) -> None:
        """The stored forward pass of the training rows, at the current weights."""
        if self._fw is None:
            self._fw = self.math.forward(xn)
        elif self._fw_version != self.fp.version():
            copy_forward(self._fw, self.math.forward(xn))
        self._fw_version = self.fp.version()

    def _run(self, key: tuple, body: Callable[[], None]) -> dict[str, Tensor]:
        """Run an epoch body: eagerly while warming up (or without capture), else by replay."""
        runs = self._runs.get(key, 0)
        if not self.capture:
            body()
        elif runs < self.WARMUP:
            self._side_stream(body)
        else:
            if key not in self._graphs:
                self._graphs[key] = self._capture_graph(body)
            graph = self._graphs[key]
            if graph is None:
                body()
            else:
                graph.replay()
        self._runs[key] = runs + 1
        self._fw_version = self.fp.version()
        out = self._out.clone().unbind()
        self._val = out[-1]
        self.sched.mark_applied(self._val)
        self._last_x = None
        return {"train": out[0], **dict(zip(COMPONENTS, out[1:-1]))}

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


# ---- choosing an engine ------------------------------------------------------------------------
MODES = ("off", "jacobian", "fused", "compile", "cudagraph")
COMPILE_ROW_EPOCHS = 2e8   # auto compiles on CPU from rows x epochs >= this (see docs/speed.md)
SMALL_STEP = 1 << 18       # activations up to this many elements: one CPU thread (see ThreadChoice)


def choose_mode(cfg: TrainerConfig, device: torch.device, n_train: int, distributed: bool = False) -> str:
    """The engine ``trainer.compile`` asks for on this device and job (``auto`` resolved).

    ``auto``: ``cudagraph`` on CUDA; on CPU ``compile`` when rows x epochs >=
    ``COMPILE_ROW_EPOCHS`` (compilation takes ~1 minute on a small CPU and then halves the
    step time, so it pays only for long runs on large data), else ``fused``. Distributed
    runs use ``fused`` (or ``off``/``jacobian`` when asked): their gradient all-reduce is an
    ``opt.step`` pre-hook, which ``DirectAdam`` honours by calling ``opt.step()``; compiled
    and captured steps could update the weights without it.
    """
    mode = cfg.compile
    if mode == "cudagraph" and device.type != "cuda":
        raise ConfigError(f"trainer.compile: expected 'cudagraph' only with a CUDA device, but the device is "
                          f"{device.type}; use trainer.compile=auto or fused")
    if distributed:  # engines that call opt.step() in Python, where the gradient all-reduce hook runs
        return mode if mode in ("off", "jacobian") else "fused"
    if mode != "auto":
        return mode
    if device.type == "cuda":
        return "cudagraph"
    return "compile" if n_train * cfg.max_epochs >= COMPILE_ROW_EPOCHS else "fused"


def make_optimizer(params: Sequence[Tensor], cfg: TrainerConfig, mode: str, device: torch.device):
    """Adam as the engine needs it: torch's default for off/jacobian, fused for the fast
    engines, and a device-tensor lr (capturable on CUDA) for cudagraph."""
    if mode in ("off", "jacobian"):
        return torch.optim.Adam(params, lr=cfg.lr)
    if mode != "cudagraph":
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


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainerConfig, mode: str):
    """ReduceLROnPlateau on the validation loss (``DevicePlateau`` for cudagraph)."""
    kw = dict(factor=cfg.lr_factor, patience=cfg.lr_patience, threshold=cfg.lr_threshold, min_lr=cfg.min_lr)
    if mode == "cudagraph":
        return DevicePlateau(opt, **kw)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", threshold_mode="rel", **kw)


def make_engine(model: RegressionNet, cfg: TrainerConfig, opt: torch.optim.Optimizer, val_x: Tensor,
                val_yn: Tensor, mode: Optional[str] = None, sched=None):
    """The step engine for ``mode`` (default: ``cfg.compile``, with auto meaning fused)."""
    mode = mode or ("fused" if cfg.compile == "auto" else cfg.compile)
    if mode in ("off", "jacobian"):
        return StepEngine(model, cfg, opt, val_x, val_yn)
    if mode == "fused":
        return FusedEngine(model, cfg, opt, val_x, val_yn)
    if mode == "compile":
        return CompiledEngine(model, cfg, opt, val_x, val_yn, strict=cfg.compile == "compile")
    if mode == "cudagraph":
        if not isinstance(sched, DevicePlateau):
            raise TypeError("cudagraph engine: expected the DevicePlateau scheduler from make_scheduler")
        return GraphEngine(model, cfg, opt, val_x, val_yn, sched)
    raise ConfigError(f"trainer.compile: expected one of auto, {', '.join(MODES)}, but got '{mode}'")
