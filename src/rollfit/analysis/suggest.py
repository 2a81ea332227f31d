"""What to simulate next: a batch of parameter sets chosen with BoTorch (``rollfit suggest``).

Every rollout is expensive, so the next batch should be the one that teaches the surrogate
most (``explore``) or that most likely improves on the best outcome so far
(``minimize:LABEL`` / ``maximize:LABEL``). ``suggest`` proposes ``n`` points at once:

- ``explore``: BoTorch's ``qNegIntegratedPosteriorVariance``, the model's posterior variance
  integrated over Sobol points of the feasible input region after conditioning on the whole
  batch, so the points spread out instead of piling up where the model is least sure. A
  model that cannot be conditioned on new points (an ensemble; BoTorch's robust GP) uses
  ``qPosteriorStandardDeviation`` (the batch's largest deviation from the posterior mean,
  averaged over seeded posterior samples) instead. (Tried for ``robust_gp``: integrated
  variance of a GP of its unflagged rows with its fitted hyperparameters; on the benchmark's
  noisy 13-input rollout surface it ended worse than a Sobol design, the std did not; see
  benchmarks/RESULTS.md, Suggest.) With several
  outputs, each output's variance is weighted by 1 / its training variance.
- ``minimize:LABEL`` / ``maximize:LABEL``: ``qLogNoisyExpectedImprovement`` with the
  training inputs as the baseline; constraints on outputs (``"cot<60"``) are the
  acquisition's outcome constraints, evaluated on the model's posterior samples.
- The batch is optimized jointly (``q = n``) by ``botorch.optim.optimize_acqf``.

**Inputs, exactly.** Bounds (default: the training range), fixed inputs and constraints over
inputs take the forms ``rollfit optimize`` takes. The optimizer works in a reduced space:
fixed inputs are left out; for each equality constraint one free input it names (the one
it depends on most at the box centre) is *solved for* by Newton's method whenever the
others change, so equalities hold to rounding (``EQ_TOL``) at every point, not only at the
end; the solved input's gradient comes from the implicit function theorem. Inequality
constraints and the solved inputs' bounds are an exterior penalty during L-BFGS-B (started
from feasible batches of a Sobol sample of the region; batched over starts, where SLSQP's
nonlinear constraints ran about 6x slower); a proposal that ends outside them is pushed inside,
or else replaced by the best unused feasible point of the sample, so every returned point
satisfies every constraint. A constraint set no point of the box meets is a one-line error.

**Output that the simulator can run.** One row per point, ``param_idx`` continuing after
the largest group index of the training files, every name of the files'
``parameter_names`` in file order (inputs the model does not use at the campaign's value,
constant over its successful rows, or at ``fixed``), then the predicted mean and std of
each output and the acquisition value of the point on its own. CSV or JSON, written
atomically.
"""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError, did_you_mean, listing
from ..io import atomic_write_bytes, atomic_write_text
from ..model.kinds import as_input
from .constraints import Constraint, parse_constraint
from .optimize import _fixed_columns, _search_box
from .rundata import check_data_exists, recorded_data_path, resolve_data_path, run_data_section

GOALS = ("explore", "minimize", "maximize")
FORMATS = ("csv", "json")
MAX_N = 10_000
POOL = 4096          # Sobol points sampled in the free-input box (feasible region, starts, MC points)
MC_POINTS = 256      # integration points of qNegIntegratedPosteriorVariance
RESTARTS, RAW_SAMPLES = 8, 128  # optimizer starts, and the random feasible batches they are picked from
GREEDY_MAX = 64      # minimize/maximize batches up to this size are chosen a point at a time (``_optimize``)
PENALTY = 1e4        # exterior penalty on the squared relative violation, x the acquisition's spread
PUSH_MARGIN = 1e-6   # slack a point pushed into the region keeps from its edge
MC_SAMPLES = 128     # posterior samples of the Monte-Carlo acquisitions
PRUNE_SAMPLES = 2048  # posterior samples that prune qLogNEI's baseline (BoTorch's default number, seeded)
STD_SAMPLES = 512    # posterior samples of qPosteriorStandardDeviation (BoTorch's default number, seeded)
ENSEMBLE_SAMPLES = 512  # member indices drawn for an ensemble's Monte-Carlo acquisitions (BoTorch's default)
MAX_BASELINE = 1000  # training rows used as qLogNEI's baseline (the best predicted ones beyond)
BASELINE_POOL = 16   # region points standing in for the baseline when no training row is inside
EQ_TOL = 1e-9        # |lhs - rhs| <= EQ_TOL * (1 + |lhs| + |rhs|) for an equality to hold
INEQ_TOL = 1e-12     # same relative allowance for an inequality
NEWTON_ITERS = 60


# ----------------------------------------------------------------------------- the goal
@dataclass(frozen=True)
class Goal:
    """``explore``, or ``minimize``/``maximize`` of one output label."""

    kind: str
    label: Optional[str] = None

    @property
    def text(self) -> str:
        return self.kind if self.label is None else f"{self.kind}:{self.label}"


def parse_goal_text(text: str) -> Goal:
    """``explore``, ``minimize:LABEL`` or ``maximize:LABEL`` (label not yet checked); torch-free."""
    kind, sep, label = str(text).partition(":")
    kind = kind.strip()
    if kind == "explore" and not sep:
        return Goal("explore")
    if kind in ("minimize", "maximize") and label.strip():
        return Goal(kind, label.strip())
    hint = did_you_mean(kind, GOALS) if kind not in GOALS else ""
    raise ConfigError(f"goal: expected explore, minimize:LABEL or maximize:LABEL, but got '{text:.60}'{hint}")


def parse_goal(text: str | Goal, out_lbl: Sequence[str]) -> Goal:
    """The goal, its label checked against the model's outputs (with a did-you-mean)."""
    goal = text if isinstance(text, Goal) else parse_goal_text(text)
    if goal.label is not None and goal.label not in out_lbl:
        hint = did_you_mean(goal.label, out_lbl) or f"; outputs: {listing(list(out_lbl), goal.label)}"
        raise ConfigError(f"goal {goal.text}: expected an output label, but got '{goal.label}'{hint}")
    return goal


# ----------------------------------------------------------------------------- the feasible region
def _env(x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    return {lbl: x[..., i] for i, lbl in enumerate(names)}


def _rel_scale(c: Constraint, env: Mapping[str, Tensor]) -> Tensor:
    """1 + |lhs| + |rhs|: what a residual is measured against (tolerances are relative)."""
    lhs, rhs = c.lhs(env), c.rhs(env)
    return 1.0 + torch.as_tensor(lhs).abs() + torch.as_tensor(rhs).abs()


class Region:
    """The feasible input region in optimizer coordinates ``u`` in [0, 1]^d.

    ``u`` holds the *independent* free inputs (not fixed, not solved for by an equality),
    scaled to their search range. ``inputs(u)`` gives all inputs in original units, with
    every equality solved for its dependent input (differentiable in ``u``); ``slack(x)``
    is >= 0 where every inequality and every dependent input's bound holds.
    """

    def __init__(self, in_lbl: Sequence[str], lo: np.ndarray, hi: np.ndarray, fixed: Mapping[int, float],
                 constraints: Sequence[Constraint]):
        self.in_lbl = list(in_lbl)
        D = len(self.in_lbl)
        self.lo = torch.as_tensor(lo, dtype=torch.float64)
        self.hi = torch.as_tensor(hi, dtype=torch.float64)
        self.fixed = dict(fixed)
        self.eqs = [c for c in constraints if c.is_equality]
        self.ineqs = [c for c in constraints if not c.is_equality]
        self.base = (self.lo + self.hi) / 2
        for i, v in self.fixed.items():
            self.base[i] = float(v)
        self.dep = self._choose_dependents()
        self.indep = [i for i in range(D) if i not in self.fixed and i not in self.dep]
        self.d = len(self.indep)
        self._ind = torch.as_tensor(self.indep, dtype=torch.long)
        self._dep = torch.as_tensor(self.dep, dtype=torch.long)
        self.ineq_scale = torch.ones(len(self.ineqs), dtype=torch.float64)

    # -- structure
    def _choose_dependents(self) -> list[int]:
        """Per equality, the free input it is solved for: of the free inputs it names and no
        earlier equality took, the one it changes most per unit of its range at the box centre."""
        dep: list[int] = []
        span = (self.hi - self.lo).clamp_min(1e-300)
        for c in self.eqs:
            options = [self.in_lbl.index(n) for n in c.names if n in self.in_lbl]
            options = [i for i in options if i not in self.fixed and i not in dep]
            if not options:
                self._check_determined(c)
                continue
            x = self.base.clone().requires_grad_(True)
            r = torch.as_tensor(c.residual(_env(x, self.in_lbl)), dtype=torch.float64)
            grad = torch.autograd.grad(r, x, allow_unused=True)[0] if r.requires_grad else None
            weight = (grad.abs() * span) if grad is not None else torch.zeros_like(x)
            dep.append(max(options, key=lambda i: (float(weight[i]), -options.index(i))))
        return dep

    def _check_determined(self, c: Constraint) -> None:
        """An equality over fixed inputs (or ones another equality solves) alone."""
        names = [n for n in c.names if n in self.in_lbl]
        if all(self.in_lbl.index(n) in self.fixed for n in names):
            env = _env(self.base, self.in_lbl)
            r = float(c.residual(env))
            if abs(r) > EQ_TOL * float(_rel_scale(c, env)):
                raise ConfigError(f"constraint '{c.text}': expected it to hold at the fixed values, but lhs - rhs "
                                  f"= {r:.6g} there; no point can satisfy it")
            self.eqs = [e for e in self.eqs if e is not c]
            return
        raise ConfigError(f"constraint '{c.text}': expected a free input left to solve it for, but every input "
                          "it names is fixed or solved for by an earlier equality; give fewer equalities")

    # -- maps
    def inputs(self, u: Tensor) -> Tensor:
        """``(..., d)`` coordinates -> ``(..., D)`` inputs in original units, equalities solved."""
        shape = u.shape[:-1]
        u2 = u.reshape(-1, self.d).to(torch.float64)
        x = self.base.expand(u2.shape[0], -1).clone()
        if self.d:
            lo, hi = self.lo[self._ind], self.hi[self._ind]
            x = x.index_copy(1, self._ind, lo + u2 * (hi - lo))
        if self.dep:
            x = self._solve(x)
        return x.reshape(*shape, x.shape[-1])

    def coords(self, x: Tensor) -> Tensor:
        """Inputs ``(N, D)`` -> their coordinates ``u`` (the independent inputs, scaled)."""
        lo, hi = self.lo[self._ind], self.hi[self._ind]
        return ((x[:, self._ind] - lo) / (hi - lo).clamp_min(1e-300)).clamp(0.0, 1.0)

    def _eq_residuals(self, x: Tensor) -> Tensor:
        env = _env(x, self.in_lbl)
        return torch.stack([torch.as_tensor(c.residual(env), dtype=x.dtype).expand(x.shape[0]) for c in self.eqs],
                           dim=1)

    def _residual_and_jacobian(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Equality residuals (N, e) and their Jacobian by the dependent inputs (N, e, e)."""
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            r = self._eq_residuals(x.detach().index_copy(1, self._dep, y))
            rows = [torch.autograd.grad(r[:, k].sum(), y, retain_graph=k < r.shape[1] - 1, allow_unused=True)[0]
                    for k in range(r.shape[1])]
        jac = torch.stack([g if g is not None else torch.zeros_like(y) for g in rows], dim=1)
        return r.detach(), jac.detach()

    def _solve(self, x: Tensor) -> Tensor:
        """``x`` with each dependent input solved from its equality (Newton on the detached
        values; one last step on the graph gives the implicit-function gradient)."""
        y = x.detach()[:, self._dep].clone()
        span = (self.hi - self.lo)[self._dep]
        for _ in range(NEWTON_ITERS):
            r, jac = self._residual_and_jacobian(x, y)
            step = (torch.linalg.pinv(jac) @ r.unsqueeze(-1)).squeeze(-1)
            step = torch.maximum(torch.minimum(step, span), -span).nan_to_num(0.0)
            y = y - step
            if float(step.abs().max()) <= 1e-15 * float(span.abs().max() + 1e-300):
                break
        r, jac = self._residual_and_jacobian(x, y)
        if not x.requires_grad:
            return x.index_copy(1, self._dep, y)
        xd = x.index_copy(1, self._dep, y)
        correction = (torch.linalg.pinv(jac) @ self._eq_residuals(xd).unsqueeze(-1)).squeeze(-1)
        return x.index_copy(1, self._dep, y - correction + correction.detach())

    # -- feasibility
    def slack(self, x: Tensor) -> Tensor:
        """(N, m) values that are >= 0 where the inequalities (scaled by ``ineq_scale``) and
        the dependent inputs' bounds (in units of their range) hold."""
        cols = []
        if self.ineqs:
            env = _env(x, self.in_lbl)
            g = torch.stack([torch.as_tensor(c.as_le(c.residual(env)), dtype=x.dtype).expand(x.shape[0])
                             for c in self.ineqs], dim=1)
            cols.append(-g / self.ineq_scale)
        if self.dep:
            lo, hi = self.lo[self._dep], self.hi[self._dep]
            span = (hi - lo).clamp_min(1e-300)
            cols += [(x[:, self._dep] - lo) / span, (hi - x[:, self._dep]) / span]
        return torch.cat(cols, dim=1) if cols else x.new_zeros(x.shape[0], 0)

    def violations(self, x: Tensor, relative: bool = True) -> Tensor:
        """(N, m + e + dependents): how far each constraint is from holding (0 where it does),
        relative to its terms' size beyond the tolerance, or (``relative=False``) in its own units."""
        env = _env(x, self.in_lbl)
        cols = []
        for c in self.ineqs + self.eqs:
            r = torch.as_tensor(c.residual(env), dtype=x.dtype).expand(x.shape[0])
            g = r.abs() if c.is_equality else torch.as_tensor(c.as_le(r))
            tol = EQ_TOL if c.is_equality else INEQ_TOL
            cols.append(torch.relu(g / _rel_scale(c, env) - tol) if relative else torch.relu(g))
        for i in self.dep:
            span = (float(self.hi[i] - self.lo[i]) or 1.0) if relative else 1.0
            cols.append(torch.relu(self.lo[i] - x[:, i]) / span + torch.relu(x[:, i] - self.hi[i]) / span)
        v = torch.stack(cols, dim=1) if cols else x.new_zeros(x.shape[0], 0)
        return torch.where(torch.isfinite(v), v, torch.full_like(v, math.inf))

    def feasible(self, x: Tensor) -> Tensor:
        """(N,) bool: every constraint and bound holds at ``x`` (within the tolerances)."""
        v = self.violations(x)
        return (v <= 0).all(dim=1) if v.shape[1] else torch.ones(x.shape[0], dtype=torch.bool)

    def contains(self, x: Tensor, tol: float = 1e-6) -> Tensor:
        """(N,) bool: ``x`` lies in the region (bounds and fixed values within ``tol`` of the
        range, constraints within their tolerances); training rows are checked with this."""
        span = (self.hi - self.lo).clamp_min(1e-12)
        inside = ((x >= self.lo - tol * span) & (x <= self.hi + tol * span)).all(dim=1)
        for i, v in self.fixed.items():
            inside &= (x[:, i] - v).abs() <= tol * max(1.0, abs(v))
        return inside & self.feasible(x)

    def constraint_names(self) -> list[str]:
        return [c.text for c in self.ineqs + self.eqs] + \
               [f"{self.in_lbl[i]} within [{float(self.lo[i]):.6g}, {float(self.hi[i]):.6g}]" for i in self.dep]


def _clamp_dependents(region: Region, x: Tensor) -> Tensor:
    """Dependent inputs a hair outside their bound put on it (the equality still holds to EQ_TOL)."""
    if not region.dep:
        return x
    x = x.clone()
    x[:, region._dep] = torch.maximum(torch.minimum(x[:, region._dep], region.hi[region._dep]), region.lo[region._dep])
    return x


@dataclass
class _Pool:
    """Feasible points of a Sobol sample of the region: coordinates and inputs."""

    u: Tensor
    x: Tensor


def _feasible_pool(region: Region, seed: int) -> _Pool:
    """Sobol points of the independent box, mapped and kept where every constraint holds;
    a few least-violating points are pushed into the region if the sample misses it; none
    at all is a one-line error naming the constraint the closest point misses."""
    if region.d == 0:
        raise ConfigError("inputs: expected at least one input free to choose, but every input is fixed or "
                          "solved for by an equality")
    u = torch.quasirandom.SobolEngine(region.d, scramble=True, seed=seed).draw(POOL, dtype=torch.float64)
    with torch.no_grad():
        x = _clamp_dependents(region, region.inputs(u))
        if region.ineqs:
            env = _env(x, region.in_lbl)
            g = torch.stack([torch.as_tensor(c.as_le(c.residual(env)), dtype=x.dtype).expand(x.shape[0])
                             for c in region.ineqs], dim=1)
            s = g.std(dim=0, correction=0)
            region.ineq_scale = torch.where(torch.isfinite(s) & (s > 1e-12), s, torch.ones_like(s))
        ok = region.feasible(x)
    if int(ok.sum()) < 16:
        extra_u = _push_into_region(region, u[_least_violating(region, x, 64)])
        with torch.no_grad():
            extra_x = _clamp_dependents(region, region.inputs(extra_u))
        u, x = torch.cat([u, extra_u]), torch.cat([x, extra_x])
        ok = region.feasible(x)
    if not bool(ok.any()):
        raise _infeasible(region, x)
    return _Pool(u[ok], x[ok])


def _least_violating(region: Region, x: Tensor, k: int) -> Tensor:
    v = region.violations(x)
    worst = v.amax(dim=1) if v.shape[1] else torch.zeros(x.shape[0], dtype=x.dtype)
    return torch.argsort(worst)[:k]


def _push_into_region(region: Region, u: Tensor, steps: int = 300) -> Tensor:
    """Projected Adam on the squared shortfall of each slack below ``PUSH_MARGIN``: points
    just outside the region (or a region too small for the Sobol sample) moved inside."""
    u = u.clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=0.01)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        slack = region.slack(region.inputs(u))
        if slack.shape[1] == 0 or not slack.requires_grad:
            break
        short = torch.relu(PUSH_MARGIN - slack)
        if float(short.detach().max()) == 0.0:
            break
        short.square().sum().backward()
        u.grad.nan_to_num_(0.0, 0.0, 0.0)
        opt.step()
        with torch.no_grad():
            u.clamp_(0.0, 1.0)
    return u.detach()


def _infeasible(region: Region, x: Tensor) -> ConfigError:
    v = region.violations(x)
    worst = v.amax(dim=1)
    best = int(torch.argmin(worst))
    j = int(torch.argmax(v[best]))
    name = region.constraint_names()[j]
    miss = float(region.violations(x[best:best + 1], relative=False)[0, j])
    return ConfigError(f"constraints: expected a region of the search box where every constraint holds, but none of "
                       f"{x.shape[0]} points sampled in it does; the closest misses '{name}' by {miss:.4g}")


# ----------------------------------------------------------------------------- the training rows
@dataclass
class Campaign:
    """What the training files say about the campaign: their rows' model inputs (in
    ``in_lbl`` order), the files' ``parameter_names`` (file order), the value of each
    parameter the model does not use when it is constant over the successful rows, and the
    largest group index of the files."""

    inputs: np.ndarray
    targets: np.ndarray
    parameter_names: list[str]
    constants: dict[str, float]
    varying: list[str]
    max_param_idx: int
    files: list[str]


def _shortest(v: float) -> float:
    """A float32 value as the shortest decimal that reads back as it (0.7, not 0.699999988)."""
    return float(str(np.float32(v)))


def read_campaign(surrogate: Any, hdf5: Any = None) -> Campaign:
    """The run's training files (or ``hdf5``), read through ``rollfit.data`` with the run's
    labels, aliases and policies, as ``evaluate.load_run_table`` reads them (the shared
    part is ``rundata``: ``evaluate`` imports ``Surrogate``, whose ``suggest`` imports this module),
    with every parameter of the files instead of the model's inputs alone."""
    from ..data.reader import expand_paths, load_rollouts, read_header

    data = run_data_section(surrogate.config)
    path = recorded_data_path(surrogate.config, surrogate.checkpoint, hdf5)
    if hdf5 is None:
        path = resolve_data_path(path, surrogate.run_dir)
        check_data_exists(path, surrogate.run_dir)
    files = expand_paths(path)
    headers = [read_header(f) for f in files]
    names = list(headers[0].param_names)
    missing = [lbl for lbl in surrogate.in_lbl if lbl not in names]
    if missing:
        raise DataError(f"{files[0]}: expected the model's inputs among parameter_names, but {listing(missing)} "
                        "are missing")
    opts = dict(aliases=data.get("aliases") or surrogate.config.get("aliases") or {},
                on_missing=data.get("on_missing", "error"), on_nonfinite=data.get("on_nonfinite", "error"),
                cache=bool(data.get("cache", True)), cache_dir=data.get("cache_dir"))
    table = load_rollouts(files, names, list(surrogate.out_lbl), **opts)
    cols = {n: table.inputs[:, k] for k, n in enumerate(names)}
    others = [n for n in names if n not in surrogate.in_lbl]
    constants = {n: _shortest(cols[n][0]) for n in others if np.ptp(cols[n]) == 0}
    inputs = np.stack([cols[lbl] for lbl in surrogate.in_lbl], axis=1).astype(np.float64)
    return Campaign(inputs, table.targets.astype(np.float64), names, constants,
                    [n for n in others if n not in constants],
                    int(max(int(h.param_idx.max()) for h in headers)), [str(f) for f in files])


# ----------------------------------------------------------------------------- acquisition
class InRegion(torch.nn.Module):
    """An acquisition function of inputs seen as one of region coordinates ``u``, less
    ``penalty`` x the squared violation of the inequalities and solved inputs' bounds (an
    exterior penalty: the optimizer stays in the box, the region's edges are soft until
    ``_make_feasible`` makes them exact)."""

    def __init__(self, acq: Any, region: Region, penalty: float = 0.0):
        super().__init__()
        self.acq, self.region, self.penalty = acq, region, penalty
        self.model = acq.model
        self.X_pending = None
        self.chosen: Optional[Tensor] = None  # (j, d) region coordinates put in front of every batch

    def forward(self, u: Tensor) -> Tensor:
        if self.chosen is not None and self.chosen.shape[0]:
            u = torch.cat([self.chosen.expand(*u.shape[:-2], *self.chosen.shape), u], dim=-2)
        x = self.region.inputs(u)
        value = self.acq(x)
        if self.penalty:
            slack = self.region.slack(x.reshape(-1, x.shape[-1]))
            if slack.shape[1]:
                miss = torch.relu(-slack).square().sum(dim=1).reshape(x.shape[:-1]).sum(dim=-1)
                value = value - self.penalty * miss
        return value

    def set_X_pending(self, X_pending: Optional[Tensor] = None) -> None:
        self.X_pending = X_pending


def _output_constraint(c: Constraint, out_lbl: Sequence[str], scale: float):
    """``Y (... x m) -> value <= 0 where c holds`` for BoTorch's outcome constraints."""
    def fn(Y: Tensor) -> Tensor:
        r = c.residual(_env(Y, out_lbl))
        return torch.as_tensor(c.as_le(r), dtype=Y.dtype).expand(Y.shape[:-1]) / scale
    return fn


def _output_scale(c: Constraint, out_lbl: Sequence[str], targets: np.ndarray) -> float:
    """Spread of an output constraint's residual over the training rows (its sigmoid's unit)."""
    r = c.residual(_env(torch.as_tensor(targets), out_lbl))
    s = float(torch.as_tensor(r, dtype=torch.float64).std(correction=0)) if len(targets) > 1 else 1.0
    return s if math.isfinite(s) and s > 1e-12 else 1.0


def _output_weights(targets: np.ndarray) -> Tensor:
    """1 / training std of each output: outputs' variances on one scale."""
    s = np.nanstd(targets, axis=0) if len(targets) > 1 else np.ones(targets.shape[1])
    s = np.where(np.isfinite(s) & (s > 1e-12), s, 1.0)
    return torch.as_tensor(1.0 / s, dtype=torch.float64)


def _sampler(model: Any, samples: int, seed: int):
    """A seeded sampler of the model's posterior: member indices for an ensemble (BoTorch's
    default number of them), else ``samples`` Sobol normal draws. Never BoTorch's default
    sampler, which takes its seed from torch's global generator: a batch then changed with
    whatever had run before (seen for robust_gp and ensemble suggestions)."""
    from botorch.sampling.index_sampler import IndexSampler
    from botorch.sampling.normal import SobolQMCNormalSampler

    from .bo_models import is_ensemble

    if is_ensemble(model):
        return IndexSampler(torch.Size([ENSEMBLE_SAMPLES]), seed=seed)
    return SobolQMCNormalSampler(torch.Size([samples]), seed=seed)


def _explore_acq(model: Any, mc_points: Tensor, weights: Tensor, seed: int):
    from botorch.acquisition.active_learning import qNegIntegratedPosteriorVariance
    from botorch.acquisition.monte_carlo import qPosteriorStandardDeviation
    from botorch.acquisition.objective import LinearMCObjective, ScalarizedPosteriorTransform

    from .bo_models import can_fantasize

    multi = model.num_outputs > 1
    if can_fantasize(model):
        transform = ScalarizedPosteriorTransform(weights) if multi else None
        return qNegIntegratedPosteriorVariance(model, mc_points, sampler=_sampler(model, 1, seed),
                                               posterior_transform=transform)
    objective = LinearMCObjective(weights) if multi else None
    return qPosteriorStandardDeviation(model, sampler=_sampler(model, STD_SAMPLES, seed), objective=objective)


def _improve_acq(model: Any, goal: Goal, out_lbl: Sequence[str], baseline: Tensor, out_cons: list, seed: int):
    """qLogNEI of the goal's output. The baseline is pruned here (to the rows that are the
    best in some posterior sample) with a seeded sampler: qLogNEI's own pruning draws from
    torch's global generator, and a branin batch then moved by up to the whole box with it."""
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.acquisition.objective import GenericMCObjective
    from botorch.acquisition.utils import prune_inferior_points

    k, sign = list(out_lbl).index(goal.label), (1.0 if goal.kind == "maximize" else -1.0)
    objective = GenericMCObjective(lambda Y, X=None: sign * Y[..., k])
    with torch.no_grad():
        baseline = prune_inferior_points(model, baseline, objective=objective, constraints=out_cons or None,
                                         sampler=_sampler(model, PRUNE_SAMPLES, seed + 1))
    return qLogNoisyExpectedImprovement(model, baseline, sampler=_sampler(model, MC_SAMPLES, seed),
                                        objective=objective, constraints=out_cons or None, prune_baseline=False,
                                        cache_root=False)


def _starts(acq: InRegion, pool: _Pool, q: int, gen: torch.Generator) -> tuple[Tensor, float]:
    """``RESTARTS`` feasible q-batches of pool points (the best of ``RAW_SAMPLES`` random
    ones) and the spread of the acquisition over those random batches."""
    m = pool.u.shape[0]
    if m >= q:
        idx = torch.stack([torch.randperm(m, generator=gen)[:q] for _ in range(RAW_SAMPLES)])
    else:
        idx = torch.randint(0, m, (RAW_SAMPLES, q), generator=gen)
    raw = pool.u[idx]
    with torch.no_grad():
        vals = torch.cat([acq(raw[i:i + 32]) for i in range(0, RAW_SAMPLES, 32)])
    finite = torch.isfinite(vals)
    spread = float(vals[finite].std(correction=0)) if int(finite.sum()) > 1 else 1.0
    vals = torch.where(finite, vals, torch.full_like(vals, -math.inf))
    return raw[torch.argsort(vals, descending=True)[:RESTARTS]], spread if math.isfinite(spread) else 1.0


def _optimize(acq: InRegion, region: Region, pool: _Pool, n: int, seed: int, greedy: bool) -> Tensor:
    """The batch (n, d) of region coordinates, by L-BFGS-B from the best feasible starts with
    the exterior penalty on the region's edges (``InRegion``).

    ``greedy``: a point at a time, each maximizing the acquisition of the batch so far plus
    that point (BoTorch's sequential mode). For expected improvement it found better batches
    than one joint optimization at the same cost (branin, 28 rows: first-round regret, median
    of 5 seeds, 0.29 vs 1.16; 6 s vs 8 s). For the integrated variance it cost 18x (70 s vs
    4 s) since every step conditions the GP on fantasies, so explore stays joint. Above
    ``GREEDY_MAX`` points a batch is joint (n steps would cost n^2 acquisition terms).
    """
    gen = torch.Generator().manual_seed(seed)
    if not greedy or n > GREEDY_MAX:
        return _optimize_batch(acq, region, pool, n, gen)
    chosen = torch.zeros(0, region.d, dtype=torch.float64)
    try:
        for _ in range(n):
            acq.chosen = chosen
            chosen = torch.cat([chosen, _optimize_batch(acq, region, pool, 1, gen)])
    finally:
        acq.chosen = None
    return chosen


def _optimize_batch(acq: InRegion, region: Region, pool: _Pool, q: int, gen: torch.Generator) -> Tensor:
    """A q-batch (q, d) of region coordinates after ``acq.chosen``, optimized jointly."""
    from botorch.optim import optimize_acqf

    bounds = torch.stack([torch.zeros(region.d), torch.ones(region.d)]).to(torch.float64)
    starts, spread = _starts(acq, pool, q, gen)
    acq.penalty = PENALTY * max(spread, 1e-9)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BoTorch's optimization warnings: the result is checked later
            u, _ = optimize_acqf(acq, bounds, q=q, num_restarts=starts.shape[0], batch_initial_conditions=starts,
                                 options={"maxiter": 200})
    finally:
        acq.penalty = 0.0
    return u.detach().reshape(q, region.d)


def _make_feasible(region: Region, pool: _Pool, u: Tensor, acq: InRegion) -> tuple[Tensor, Tensor]:
    """The batch's inputs, every point inside the region: a point the optimizer left outside
    is pushed in (``_push_into_region``), or else replaced by the unused pool point that adds
    most to the batch's acquisition value."""
    u = u.clamp(0.0, 1.0)
    with torch.no_grad():
        bad = ~region.feasible(_clamp_dependents(region, region.inputs(u)))
    if bool(bad.any()):
        u[bad] = _push_into_region(region, u[bad])
    with torch.no_grad():
        x = _clamp_dependents(region, region.inputs(u))
        bad = (~region.feasible(x)).nonzero().flatten().tolist()
        for i in bad:
            unused = torch.ones(pool.u.shape[0], dtype=torch.bool)
            for j in range(u.shape[0]):
                unused &= (pool.u - u[j]).abs().amax(dim=1) > 1e-12
            cand = pool.u[unused][:256] if bool(unused.any()) else pool.u[:256]
            trial = u.unsqueeze(0).repeat(cand.shape[0], 1, 1)
            trial[:, i] = cand
            vals = torch.cat([acq(trial[k:k + 32]) for k in range(0, trial.shape[0], 32)])
            u[i] = cand[int(torch.argmax(torch.nan_to_num(vals, nan=-math.inf)))]
        x = _clamp_dependents(region, region.inputs(u))
    return u, x


# ----------------------------------------------------------------------------- result
@dataclass
class Suggestions:
    """The proposed batch: ``rows`` (CSV-ready dicts in ``columns`` order) and the arrays.

    ``inputs`` (n, D) in the model's ``in_lbl`` order; ``mean``/``std`` (n, K) predicted
    outputs and the std of a new observation; ``acquisition`` (n,) each point's value on its
    own; ``batch_acquisition`` the jointly optimized batch's value.
    """

    goal: str
    acquisition_name: str
    columns: list[str]
    rows: list[dict[str, float]]
    inputs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    acquisition: np.ndarray
    batch_acquisition: float
    in_lbl: list[str]
    out_lbl: list[str]
    parameter_names: list[str]
    fixed: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    constraints: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    training_inputs: Optional[np.ndarray] = None

    def csv_text(self) -> str:
        """The rows as CSV (full float precision; param_idx as an integer)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for row in self.rows:
            w.writerow([repr(float(row[c])) if c != "param_idx" else int(row[c]) for c in self.columns])
        return buf.getvalue()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the rows and what they were chosen for."""
        def num(v: float) -> Optional[float]:
            return float(v) if math.isfinite(float(v)) else None
        return {"goal": self.goal, "acquisition": self.acquisition_name, "batch_acquisition": num(self.batch_acquisition),
                "columns": self.columns,
                "rows": [{c: (int(r[c]) if c == "param_idx" else num(r[c])) for c in self.columns} for r in self.rows],
                "fixed": self.fixed, "bounds": {k: list(v) for k, v in self.bounds.items()},
                "constraints": self.constraints, "warnings": self.warnings}

    def write(self, path: str | Path, fmt: str = "csv") -> Path:
        """Write the rows as CSV or JSON, atomically."""
        if fmt not in FORMATS:
            raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, but got '{fmt}'")
        text = self.csv_text() if fmt == "csv" else json.dumps(self.to_json(), indent=2) + "\n"
        atomic_write_text(path, text)
        return Path(path)

    def table(self, limit: int = 20) -> str:
        """A short fixed-width table: the model's inputs, predicted outputs and acquisition."""
        cols = ["param_idx", *self.in_lbl, *[c for lbl in self.out_lbl for c in (lbl, f"{lbl}_std")], "acquisition"]
        cols = [c for c in cols if c in self.columns]
        width = {c: max(len(c), 10) for c in cols}
        fmt = lambda c, v: str(int(v)) if c == "param_idx" else f"{v:.6g}"  # noqa: E731
        lines = ["  ".join(f"{c:>{width[c]}}" for c in cols)]
        lines += ["  ".join(f"{fmt(c, r[c]):>{width[c]}}" for c in cols) for r in self.rows[:limit]]
        if len(self.rows) > limit:
            lines.append(f"... {len(self.rows) - limit} more rows in the file")
        return "\n".join(lines)


def _columns(names: Sequence[str], out_lbl: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Output columns named ``<label>``/``<label>_std`` (``predicted_`` in front on a clash)."""
    taken = set(names) | {"param_idx", "acquisition"}
    rename = {}
    for lbl in out_lbl:
        name = lbl if lbl not in taken and f"{lbl}_std" not in taken else f"predicted_{lbl}"
        rename[lbl] = name
    cols = ["param_idx", *names, *[c for lbl in out_lbl for c in (rename[lbl], f"{rename[lbl]}_std")], "acquisition"]
    return cols, rename


# ----------------------------------------------------------------------------- public API
def _split_constraints(texts: Sequence[str], in_lbl: Sequence[str],
                       out_lbl: Sequence[str]) -> tuple[list[Constraint], list[Constraint]]:
    """Constraints over inputs and over outputs (one constraint may not mix them)."""
    ins, outs = [], []
    for text in texts:
        c = parse_constraint(text, list(in_lbl) + [o for o in out_lbl if o not in in_lbl],
                             name_kind="an input or output label")
        on_outputs = [n for n in c.names if n in out_lbl and n not in in_lbl]
        if on_outputs and len(on_outputs) < len(c.names):
            raise ConfigError(f"constraint '{text}': expected labels of inputs only or of outputs only, but got "
                              f"both ({', '.join(c.names)})")
        (outs if on_outputs else ins).append(c)
    return ins, outs


def _split_fixed(fixed: Mapping[str, float], in_lbl: Sequence[str],
                 names: Sequence[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Fixed model inputs, and fixed parameters the model does not use (for the output file)."""
    model, other = {}, {}
    for name, value in fixed.items():
        if name in in_lbl:
            model[name] = float(value)
        elif name in names:
            other[name] = float(value)
        else:
            raise ConfigError(f"fixed: expected an input label or a parameter name of the training files, but got "
                              f"'{name}'{did_you_mean(name, list(names)) or '; names: ' + listing(list(names), name)}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"fixed {name}: expected a finite number, but got {value}")
    return model, other


def suggest(surrogate: Any, n: int, goal: str | Goal = "explore", constraints: Sequence[str] = (),
            fixed: Optional[Mapping[str, float]] = None,
            bounds: Optional[Mapping[str, Sequence[Optional[float]]]] = None, seed: int = 0, *,
            hdf5: Any = None, campaign: Optional[Campaign] = None) -> Suggestions:
    """Propose ``n`` parameter sets to simulate next (see the module's docstring).

    ``goal``: ``explore`` (default), ``minimize:LABEL`` or ``maximize:LABEL``.
    ``constraints``: expressions over input labels (``"gait_stride*gait_cadence=1.2"``) or
    over output labels (``"cot<60"``, with minimize/maximize: outcome constraints; with
    explore: the variance is integrated where the predicted mean meets them).
    ``fixed``: label -> value for model inputs (held there) and for parameters the model
    does not use (written to the file). ``bounds``: input -> (low, high), None keeps the
    training bound. ``hdf5``: the training files (default: the run's). ``campaign``: the
    training files already read (``read_campaign``).
    """
    from .bo_models import botorch_model

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= MAX_N:
        raise ConfigError(f"n: expected a number of points from 1 to {MAX_N}, but got {n!r}")
    n = int(n)
    model = surrogate.model
    bo = botorch_model(model)  # refuses kinds without an uncertainty first, before reading data
    goal = parse_goal(goal, surrogate.out_lbl)
    in_cons, out_cons = _split_constraints(list(constraints), surrogate.in_lbl, surrogate.out_lbl)
    camp = campaign if campaign is not None else read_campaign(surrogate, hdf5)
    fixed_model, fixed_other = _split_fixed(dict(fixed or {}), surrogate.in_lbl, camp.parameter_names)
    unset = [name for name in camp.varying if name not in fixed_other]
    if unset:
        raise ConfigError(f"{', '.join(unset)}: expected one value in the training files for the parameters the model "
                          f"does not use, but they vary there; pass --fixed {unset[0]}=VALUE (one per name)")
    warns: list[str] = []
    lo, hi = _search_box(surrogate, bounds, warns)
    fidx, fvals = _fixed_columns(surrogate, fixed_model, bounds, warns, 1)
    region = Region(surrogate.in_lbl, lo, hi, {i: float(fvals[0, j]) for j, i in enumerate(fidx)}, in_cons)
    pool = _feasible_pool(region, seed)

    weights = _output_weights(camp.targets)
    if goal.kind == "explore":
        mc = _mc_points(surrogate, pool, out_cons, warns, seed)
        acq = _explore_acq(bo, mc, weights, seed)
        name = type(acq).__name__
    else:
        scales = [_output_scale(c, surrogate.out_lbl, camp.targets) for c in out_cons]
        fns = [_output_constraint(c, surrogate.out_lbl, s) for c, s in zip(out_cons, scales)]
        acq = _improve_acq(bo, goal, surrogate.out_lbl, _baseline(surrogate, camp, goal, region, pool), fns, seed)
        name = type(acq).__name__
    wrapped = InRegion(acq, region)
    u = _optimize(wrapped, region, pool, n, seed, greedy=goal.kind != "explore")
    u, x = _make_feasible(region, pool, u, wrapped)
    with torch.no_grad():
        batch_value = float(acq(x.unsqueeze(0)).reshape(-1)[0])
        each = torch.cat([acq(x[i:i + 64].unsqueeze(1)).reshape(-1) for i in range(0, n, 64)]).numpy()
    return _result(surrogate, goal, name, camp, x.numpy(), each, batch_value, fixed_model, fixed_other, region,
                   list(constraints), warns)


def _mc_points(surrogate: Any, pool: _Pool, out_cons: list[Constraint], warns: list[str], seed: int) -> Tensor:
    """Integration points: pool points (where the predicted mean meets the output constraints)."""
    x = pool.x
    if out_cons:
        with torch.no_grad():
            y = surrogate.model.predict(as_input(surrogate.model, x)).to(torch.float64)
        env = _env(y, surrogate.out_lbl)
        keep = torch.ones(x.shape[0], dtype=torch.bool)
        for c in out_cons:
            keep &= torch.as_tensor(c.violation(c.residual(env))).expand(x.shape[0]) <= 0
        if bool(keep.any()):
            x = x[keep]
        else:
            warns.append("no point of the region is predicted to meet the output constraints: the variance is "
                         "integrated over the whole region")
    if x.shape[0] > MC_POINTS:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed + 7))[:MC_POINTS]]
    return x


def _baseline(surrogate: Any, camp: Campaign, goal: Goal, region: Region, pool: _Pool) -> Tensor:
    """qLogNEI's baseline, what to improve on: the training inputs inside the region (the
    ``MAX_BASELINE`` best measured ones when more). An incumbent outside the region (another
    fixed value, a broken constraint) would be an improvement no point may reach; with no
    training row inside, the ``BASELINE_POOL`` region points of best predicted goal stand in."""
    k, sign = list(surrogate.out_lbl).index(goal.label), (1.0 if goal.kind == "maximize" else -1.0)
    x = torch.as_tensor(camp.inputs, dtype=torch.float64)
    y = torch.as_tensor(camp.targets[:, k], dtype=torch.float64) * sign
    inside = region.contains(x)
    x, y = x[inside], y[inside]
    if x.shape[0] == 0:
        with torch.no_grad():
            pred = surrogate.model.predict(as_input(surrogate.model, pool.x))[:, k].to(torch.float64) * sign
        return pool.x[torch.argsort(pred, descending=True)[:BASELINE_POOL]]
    if x.shape[0] > MAX_BASELINE:
        x = x[torch.argsort(y, descending=True)[:MAX_BASELINE]]
    return x


def _result(sur: Any, goal: Goal, acq_name: str, camp: Campaign, x: np.ndarray, each: np.ndarray, batch: float,
            fixed_model: dict[str, float], fixed_other: dict[str, float], region: Region, constraints: list[str],
            warns: list[str]) -> Suggestions:
    """The rows of the output file, in ``parameter_names`` order, and the arrays."""
    with torch.no_grad():
        mean, std = sur.model.predict_std(as_input(sur.model, x))
    mean, std = mean.detach().cpu().numpy().astype(np.float64), std.detach().cpu().numpy().astype(np.float64)
    cols, rename = _columns(camp.parameter_names, sur.out_lbl)
    values = {**camp.constants, **fixed_other}
    rows = []
    for r in range(x.shape[0]):
        row: dict[str, float] = {"param_idx": camp.max_param_idx + 1 + r}
        for name in camp.parameter_names:
            row[name] = float(x[r, sur.in_lbl.index(name)]) if name in sur.in_lbl else values[name]
        for k, lbl in enumerate(sur.out_lbl):
            row[rename[lbl]], row[f"{rename[lbl]}_std"] = float(mean[r, k]), float(std[r, k])
        row["acquisition"] = float(each[r])
        rows.append(row)
    bounds = {sur.in_lbl[i]: (float(region.lo[i]), float(region.hi[i])) for i in range(len(sur.in_lbl))
              if i not in region.fixed}
    return Suggestions(goal.text, acq_name, cols, rows, x, mean, std, np.asarray(each, np.float64), batch,
                       list(sur.in_lbl), list(sur.out_lbl), list(camp.parameter_names),
                       {**fixed_model, **fixed_other}, bounds, constraints, warns, camp.inputs)


# ----------------------------------------------------------------------------- plot
def _relevant_inputs(sur: Any, sugg: Suggestions, k_out: int) -> list[int]:
    """The free inputs along which the predicted output changes most (mean |gradient| x range
    over the proposals), at most two."""
    free = [i for i, lbl in enumerate(sugg.in_lbl) if lbl in sugg.bounds and sugg.bounds[lbl][1] > sugg.bounds[lbl][0]]
    if len(free) <= 2:
        return free
    x = as_input(sur.model, sugg.inputs).clone().requires_grad_(True)
    y = sur.model(x)[:, k_out].sum()
    g = torch.autograd.grad(y, x)[0].abs().mean(dim=0).detach().cpu().numpy()
    span = np.array([sugg.bounds[sugg.in_lbl[i]][1] - sugg.bounds[sugg.in_lbl[i]][0] for i in free])
    score = g[free] * span
    return [free[j] for j in np.argsort(-score)[:2]]


def plot_suggestions(sur: Any, sugg: Suggestions, grid: int = 60):
    """The proposals over the predicted mean and std of the goal's output (the first output
    when exploring): a map over the two most relevant free inputs (others at the proposals'
    median), or curves with a +-2 std band for one free input. An Agg figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    label = sugg.goal.partition(":")[2] or sugg.out_lbl[0]
    k = sugg.out_lbl.index(label)
    axes_idx = _relevant_inputs(sur, sugg, k)
    centre = np.median(sugg.inputs, axis=0)
    fig = Figure(figsize=(11.0, 4.4) if len(axes_idx) == 2 else (7.0, 4.4))
    FigureCanvasAgg(fig)
    if len(axes_idx) == 2:
        _map_panels(fig, sur, sugg, axes_idx, centre, k, label, grid)
    else:
        _line_panel(fig, sur, sugg, axes_idx[0] if axes_idx else 0, centre, k, label, grid * 4)
    fig.suptitle(f"rollfit suggest: {len(sugg.rows)} points ({sugg.goal})")
    fig.tight_layout()
    return fig


def _predict_grid(sur: Any, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        m, s = sur.model.predict_std(as_input(sur.model, x))
    return m[:, k].cpu().numpy().astype(float), s[:, k].cpu().numpy().astype(float)


def _map_panels(fig, sur, sugg, idx, centre, k, label, grid) -> None:
    (i, j), (li, lj) = idx, (sugg.in_lbl[idx[0]], sugg.in_lbl[idx[1]])
    a = np.linspace(*sugg.bounds[li], grid)
    b = np.linspace(*sugg.bounds[lj], grid)
    A, B = np.meshgrid(a, b)
    x = np.tile(centre, (A.size, 1))
    x[:, i], x[:, j] = A.ravel(), B.ravel()
    m, s = _predict_grid(sur, x, k)
    for ax, z, title in zip(fig.subplots(1, 2), (m, s), (f"predicted {label}", f"std of {label}")):
        cs = ax.contourf(A, B, z.reshape(A.shape), levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax)
        if sugg.training_inputs is not None:
            ax.plot(sugg.training_inputs[:, i], sugg.training_inputs[:, j], ".", color="white", ms=3,
                    label="training rows")
        ax.plot(sugg.inputs[:, i], sugg.inputs[:, j], "o", mfc="none", mec="red", mew=1.5, label="suggested")
        ax.set(xlabel=li, ylabel=lj, title=title)
    fig.axes[0].legend(fontsize=7, loc="upper right")


def _line_panel(fig, sur, sugg, i, centre, k, label, grid) -> None:
    li = sugg.in_lbl[i]
    lo, hi = sugg.bounds.get(li, (float(sugg.inputs[:, i].min()), float(sugg.inputs[:, i].max())))
    a = np.linspace(lo, hi, grid)
    x = np.tile(centre, (grid, 1))
    x[:, i] = a
    m, s = _predict_grid(sur, x, k)
    ax = fig.subplots(1, 1)
    ax.plot(a, m, color="C0", label=f"predicted {label}")
    ax.fill_between(a, m - 2 * s, m + 2 * s, color="C0", alpha=0.25, label="+-2 std")
    ax.plot(sugg.inputs[:, i], sugg.mean[:, k], "o", color="red", label="suggested")
    ax.set(xlabel=li, ylabel=label)
    ax.legend(fontsize=7)


def write_plot(sur: Any, sugg: Suggestions, path: str | Path, dpi: int = 100) -> Path:
    """Draw the proposals (``plot_suggestions``) and save the PNG atomically."""
    buf = io.BytesIO()
    plot_suggestions(sur, sugg).savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
