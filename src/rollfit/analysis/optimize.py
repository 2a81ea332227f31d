"""Find the best inputs: minimize (or maximize) a surrogate's output under constraints.

Why people train these models: "which stride and cadence minimize the cost of transport?",
"at speed 1.2 (stride x cadence = 1.2), which combination is cheapest?". ``optimize`` answers
one such question, ``sweep_optimum`` traces the answer along a swept fixed value or
constraint right-hand side.

Method (all starts of all problems are one batch on the device, in float64):

1. The free inputs are mapped to the unit box ``u in [0, 1]^d`` of their search range (the
   training range unless ``bounds`` says otherwise); fixed inputs are constants.
2. Starts are a scrambled Sobol sample of the box. The objective and each constraint
   residual are divided by their spread over the box, so one step size suits every problem.
3. Projected Adam minimizes the augmented Lagrangian (equalities ``c = 0`` and inequalities
   ``g <= 0``); ``OUTER`` times along the way the multipliers are updated and the penalty
   grows where the violation did not shrink. The step size decays (cosine) from
   ``LR_START`` to ``LR_END``: the last steps are the polish.
4. A Gauss-Newton restoration projects each point onto its equality and violated
   inequality constraints, so residuals end at rounding level.
5. Per problem the best feasible start wins; when none is feasible the least violating one
   is returned with ``feasible=False`` and a message saying so.

Risk-averse optimization (``risk = k > 0``, model kinds with an uncertainty): the objective is
``target + k * std(target)`` when minimizing (``target - k * std(target)`` when maximizing),
where ``std(target)`` is the predictive standard deviation of the target expression, by the
delta method with independent outputs: ``sqrt(sum_k (d target / d y_k)^2 std_k^2)`` (for one
output label, its std). ``predict_std`` is differentiable, so the same solver runs on it.

No scipy: the whole loop is torch, so it runs on the GPU as well as on the CPU.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch

from ..errors import ConfigError, RollfitError, did_you_mean, listing
from ..model.kinds import require_std
from .constraints import Constraint, Expression, parse_constraint, parse_target
from .rundata import resolve_data_path, run_data_section


class SurrogateLike(Protocol):
    """What the optimizer needs of a model: ``Surrogate`` has it (declared here, so this
    module does not import ``surrogate``, which imports this one for ``Surrogate.optimize``)."""

    model: torch.nn.Module
    config: dict[str, Any]
    in_lbl: list[str]
    out_lbl: list[str]
    bounds_are_estimated: bool
    run_dir: Optional[Path]
    kind: str
    has_std: bool

    def predict(self, X: Any, return_std: bool = False) -> Any: ...

    def _bounds_arrays(self) -> tuple[np.ndarray, np.ndarray]: ...

LR_START, LR_END = 0.05, 1e-4  # Adam step sizes in unit-box coordinates
OUTER, STEPS = 8, 800  # multiplier updates, and Adam steps in all (default)
MU_START, MU_GROWTH, MU_MAX = 10.0, 10.0, 1e6
FEAS_TOL = 1e-6  # allowed violation, in units of the constraint's spread over the box
EDGE_TOL = 1e-3  # an optimum this close (unit-box) to a search bound is "at the edge"
FAR_FACTOR = 3.0  # distance > this x the median spacing of training points is "far"
SINGLE_THREAD_ROWS = 16384  # CPU batches up to this many rows run on one thread (see _cpu_threads)
Z95 = NormalDist().inv_cdf(0.975)  # mean +- Z95 std: a 95% interval (as in evaluate, not imported: no cycle)


@dataclass
class OptimizationResult:
    """The optimum of one problem, in original units.

    ``constraints`` maps each constraint's text to its residual ``lhs - rhs`` (0 for a met
    equality, <= 0 for a met ``<=``). ``distance_to_nearest_training_point`` is Euclidean in
    units of the training inputs' standard deviations (None when the training data could not
    be read; ``distance_note`` says why). ``warnings`` flag extrapolation and edge optima.
    For a model with an uncertainty, ``output_std`` is each output's predicted std at the
    optimum, ``objective_std`` the target's (see the module docstring) and ``risk_objective``
    what was optimized: ``objective + risk * objective_std`` (maximizing: minus); all three are
    empty/None for a model without one.
    """

    target: str
    maximize: bool
    inputs: dict[str, float]
    outputs: dict[str, float]
    constraints: dict[str, float]
    feasible: bool
    objective: float
    distance_to_nearest_training_point: Optional[float] = None
    nearest_training_point: Optional[dict[str, float]] = None
    distance_note: str = ""
    message: str = ""
    max_violation: float = 0.0
    warnings: list[str] = field(default_factory=list)
    fixed: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    params: dict[str, float] = field(default_factory=dict)
    starts: int = 0
    feasible_starts: int = 0
    risk: float = 0.0
    output_std: dict[str, float] = field(default_factory=dict)
    objective_std: Optional[float] = None
    risk_objective: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (bounds as [lo, hi] lists)."""
        d = asdict(self)
        d["bounds"] = {k: [lo, hi] for k, (lo, hi) in self.bounds.items()}
        return d


@dataclass
class SweepResult:
    """``sweep_optimum``'s answer: one CSV-ready row per swept value, and the full results.

    ``rows[i]`` holds the swept values, the optimal inputs, the predicted outputs, the
    objective, ``feasible``, ``max_violation`` and the distance to the training data.
    """

    target: str
    vary: list[str]
    rows: list[dict[str, Any]]
    results: list[OptimizationResult]
    warnings: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else []


# ----------------------------------------------------------------------------- the problem
@dataclass
class _Problem:
    """P problems sharing objective, constraints and free inputs; they differ in the values
    of fixed inputs (``fixed_values`` (P, F)) and sweep symbols (``params`` name -> (P,))."""

    in_lbl: list[str]
    free: list[int]
    fixed: list[int]
    fixed_values: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    params: dict[str, np.ndarray]
    target: Expression
    target_text: str
    sign: float
    constraints: list[Constraint]
    warnings: list[str]
    risk: float = 0.0

    @property
    def n(self) -> int:
        return self.fixed_values.shape[0]


def _check_input(name: str, in_lbl: Sequence[str], where: str) -> int:
    if name not in in_lbl:
        raise ConfigError(f"{where}: expected an input label, but got '{name}'"
                          f"{did_you_mean(name, in_lbl) or '; inputs: ' + listing(list(in_lbl), name)}")
    return list(in_lbl).index(name)


def _search_box(sur: "SurrogateLike", bounds: Optional[Mapping[str, Sequence[Optional[float]]]],
                warns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Search range per input: the training range, overridden by ``bounds`` (None keeps a side)."""
    tlo, thi = sur._bounds_arrays()
    lo, hi = tlo.astype(np.float64).copy(), thi.astype(np.float64).copy()
    for name, pair in (bounds or {}).items():
        i = _check_input(name, sur.in_lbl, "bounds")
        if len(pair) != 2:
            raise ConfigError(f"bounds {name}: expected (low, high), but got {tuple(pair)}")
        lo[i] = lo[i] if pair[0] is None else float(pair[0])
        hi[i] = hi[i] if pair[1] is None else float(pair[1])
        if not (np.isfinite(lo[i]) and np.isfinite(hi[i]) and lo[i] <= hi[i]):
            raise ConfigError(f"bounds {name}: expected finite low <= high, but got ({lo[i]:g}, {hi[i]:g})")
        if lo[i] < tlo[i] or hi[i] > thi[i]:
            warns.append(f"bounds {name}=[{lo[i]:.6g}, {hi[i]:.6g}] reach outside the training range "
                         f"[{tlo[i]:.6g}, {thi[i]:.6g}]: the model extrapolates there")
    return lo, hi


def _fixed_columns(sur: "SurrogateLike", fix: Mapping[str, Any], bounds: Optional[Mapping[str, Any]],
                   warns: list[str], n: int) -> tuple[list[int], np.ndarray]:
    """Indices of fixed inputs and their values (n, F); out-of-range values are warned about."""
    tlo, thi = sur._bounds_arrays()
    idx, cols = [], []
    for name, value in fix.items():
        i = _check_input(name, sur.in_lbl, "fix")
        if bounds and name in bounds:
            raise ConfigError(f"{name}: expected either a fixed value or bounds, but got both")
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        if v.size not in (1, n):
            raise ConfigError(f"fix {name}: expected one value (or {n}), but got {v.size}")
        v = np.broadcast_to(v, (n,))
        if not np.all(np.isfinite(v)):
            raise ConfigError(f"fix {name}: expected a finite number, but got {value}")
        outside = v[(v < tlo[i]) | (v > thi[i])]
        if outside.size:
            shown = ", ".join(f"{x:.6g}" for x in np.unique(outside)[:5])
            warns.append(f"{name}={shown} is outside the training range [{tlo[i]:.6g}, {thi[i]:.6g}]: "
                         "the model extrapolates there")
        idx.append(i)
        cols.append(v)
    values = np.stack(cols, axis=1) if cols else np.zeros((n, 0))
    return idx, values


def check_risk(sur: "SurrogateLike", risk: Any) -> float:
    """``risk`` as a float >= 0; a positive one needs a model with an uncertainty (one-line
    errors otherwise, naming the kinds that have one)."""
    try:
        value = float(risk)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(risk, bool) or not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"risk: expected a finite number >= 0 (0: minimize the mean), but got {risk!r}")
    if value > 0:
        require_std(sur.kind, "an uncertainty (risk > 0 optimizes mean + risk * std)")
    return value


def _build_problem(sur: "SurrogateLike", target: str, maximize: bool, fix: Mapping[str, Any],
                   bounds: Optional[Mapping[str, Any]], constraints: Sequence[str],
                   params: Mapping[str, np.ndarray], n: int, risk: float = 0.0) -> _Problem:
    """Validate every option against the surrogate's labels and assemble a ``_Problem``."""
    risk = check_risk(sur, risk)
    warns: list[str] = []
    if sur.bounds_are_estimated:
        warns.append("the checkpoint records no input ranges: search ranges are the training mean +- 2 std")
    expr = parse_target(target, sur.out_lbl)
    allowed = list(sur.in_lbl) + [p for p in params if p not in sur.in_lbl]
    cons = [parse_constraint(t, allowed) for t in constraints]
    lo, hi = _search_box(sur, bounds, warns)
    fixed, values = _fixed_columns(sur, fix, bounds, warns, n)
    free = [i for i in range(len(sur.in_lbl)) if i not in fixed]
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    return _Problem(list(sur.in_lbl), free, fixed, values, lo, hi, params, expr, target,
                    -1.0 if maximize else 1.0, cons, warns, risk)


# ----------------------------------------------------------------------------- evaluation
class _Evaluator:
    """The model (a float64 copy on ``device``), the objective and the constraint residuals
    of a batch of rows; row ``r`` belongs to problem ``r // starts``."""

    def __init__(self, sur: "SurrogateLike", prob: _Problem, starts: int, device: torch.device):
        self.prob, self.starts, self.device, self.out_lbl = prob, starts, device, list(sur.out_lbl)
        self.model = copy.deepcopy(sur.model).to(device=device, dtype=torch.float64).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        free, d = torch.as_tensor(prob.free, dtype=torch.long), len(prob.in_lbl)
        self.lo, self.span = self._t(prob.lo[prob.free]), self._t(prob.hi[prob.free] - prob.lo[prob.free])
        self.place = torch.zeros(len(prob.free), d, dtype=torch.float64, device=device)
        self.place[torch.arange(len(prob.free)), free] = 1.0
        base = torch.zeros(prob.n, d, dtype=torch.float64, device=device)
        if prob.fixed:
            base[:, prob.fixed] = self._t(prob.fixed_values)
        self.base = base.repeat_interleave(starts, dim=0)
        self.params = {k: self._t(v).repeat_interleave(starts) for k, v in prob.params.items()}

    def _t(self, a: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, np.float64), device=self.device)

    def inputs(self, u: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unit-box coordinates of the free inputs (N, d_free) -> all inputs in original units."""
        base = self.base if rows is None else self.base[rows]
        return base + (self.lo + u * self.span) @ self.place

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """The target expression per row (original units, not signed); with ``risk`` k > 0,
        the risk-averse ``target + k std(target)`` (maximizing: ``target - k std(target)``)."""
        if not self.prob.risk:
            y = self.model(x)  # original units for every convention and kind
            return _as_rows(self.prob.target({lbl: y[:, k] for k, lbl in enumerate(self.out_lbl)}), x)
        mean, std = self.model.predict_std(x)
        f, sf = target_with_std(self.prob.target, self.out_lbl, mean, std)
        return f + self.prob.sign * self.prob.risk * sf

    def residuals(self, x: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Constraint residuals ``lhs - rhs`` per row, (N, m)."""
        env: dict[str, Any] = {lbl: x[:, i] for i, lbl in enumerate(self.prob.in_lbl)}
        env.update(self.params if rows is None else {k: v[rows] for k, v in self.params.items()})
        cols = [_as_rows(c.residual(env), x) for c in self.prob.constraints]
        return torch.stack(cols, dim=1) if cols else x.new_zeros(x.shape[0], 0)


def target_with_std(target: Expression, out_lbl: Sequence[str], mean: torch.Tensor,
                    std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, std of the target) per row from the outputs' predictive means and stds (N, K).

    The std is the delta method's ``|grad_y target * std|`` (outputs taken as independent):
    exact for a linear target, the output's own std for a single label. Differentiable with
    respect to whatever ``mean`` and ``std`` depend on when grad mode is on; the gradient of
    the target by the outputs comes from autograd (rows are independent, so the gradient of
    the sum is each row's).
    """
    connected = mean.requires_grad and torch.is_grad_enabled()
    with torch.enable_grad():
        y = mean if connected else mean.detach().requires_grad_(True)
        f = _as_rows(target({lbl: y[:, k] for k, lbl in enumerate(out_lbl)}), y)
        g = torch.autograd.grad(f.sum(), y, create_graph=connected, allow_unused=True)[0] if f.requires_grad else None
    g = torch.zeros_like(mean) if g is None else g
    sf = torch.linalg.vector_norm(g * std, dim=1)
    return (f if connected else f.detach()), sf


def _as_rows(value: Any, like: torch.Tensor) -> torch.Tensor:
    """An expression value (a per-row tensor or a constant) as an (N,) tensor."""
    n = like.shape[0]
    if isinstance(value, torch.Tensor) and value.shape == (n,):
        return value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(n)


@dataclass
class _Scaled:
    """What turns raw values into the solver's units: objective sign and spread, and per
    constraint the sign giving ``g <= 0`` form, the spread and the equality mask."""

    fsign: float
    fscale: float
    sign: torch.Tensor
    scale: torch.Tensor
    eq: torch.Tensor

    def g(self, r: torch.Tensor) -> torch.Tensor:
        """Residuals (N, m) -> scaled ``g`` (equalities: ``g = 0``; others: ``g <= 0``)."""
        return r * self.sign / self.scale

    def violation(self, r: torch.Tensor) -> torch.Tensor:
        """Worst scaled violation per row (0 without constraints)."""
        g = self.g(r)
        v = torch.where(self.eq, g.abs(), torch.relu(g))
        return v.amax(dim=1) if v.shape[1] else torch.zeros(r.shape[0], dtype=r.dtype, device=r.device)


def _scaling(ev: _Evaluator, d: int, seed: int) -> _Scaled:
    """Spread (std over random points of the box) of the objective and of each residual."""
    gen = torch.Generator().manual_seed(seed + 1)
    n_rows = ev.base.shape[0]
    rows = torch.randint(0, n_rows, (max(512, n_rows),), generator=gen).to(ev.device)
    u = torch.rand(rows.shape[0], d, generator=gen, dtype=torch.float64).to(ev.device)
    with torch.no_grad():
        x = ev.inputs(u, rows)
        f, r = ev.objective(x), ev.residuals(x, rows)
    fs = float(f.std(correction=0))
    sc = r.std(dim=0, correction=0) if r.shape[1] else r.new_ones(0)
    cons = ev.prob.constraints
    return _Scaled(ev.prob.sign, fs if math.isfinite(fs) and fs > 1e-12 else 1.0,
                   torch.tensor([-1.0 if c.kind == "ge" else 1.0 for c in cons], dtype=torch.float64, device=ev.device),
                   torch.where(torch.isfinite(sc) & (sc > 1e-12), sc, torch.ones_like(sc)),
                   torch.tensor([c.is_equality for c in cons], dtype=torch.bool, device=ev.device))


# ----------------------------------------------------------------------------- the solver
def _lagrangian(ev: _Evaluator, u: torch.Tensor, lam: torch.Tensor, mu: torch.Tensor, sc: _Scaled) -> torch.Tensor:
    """Augmented Lagrangian per row: scaled objective + multiplier and penalty terms."""
    x = ev.inputs(u)
    f = sc.fsign * ev.objective(x) / sc.fscale
    g = sc.g(ev.residuals(x))
    eq_term = lam * g + 0.5 * mu * g * g
    ineq_term = (torch.relu(lam + mu * g) ** 2 - lam * lam) / (2.0 * mu)
    return f + torch.where(sc.eq, eq_term, ineq_term).sum(dim=1)


def _adam_al(ev: _Evaluator, u0: torch.Tensor, sc: _Scaled, steps: int) -> torch.Tensor:
    """Projected Adam on the augmented Lagrangian, multipliers updated ``OUTER`` times."""
    u = u0.clone().requires_grad_(True)
    m = sc.eq.shape[0]
    lam = torch.zeros(u.shape[0], m, dtype=u.dtype, device=u.device)
    mu = torch.full((u.shape[0], 1), MU_START, dtype=u.dtype, device=u.device)
    last = torch.full((u.shape[0],), math.inf, dtype=u.dtype, device=u.device)
    opt = torch.optim.Adam([u], lr=LR_START)
    inner = max(1, steps // OUTER)
    total = OUTER * inner
    for k in range(OUTER):
        for j in range(inner):
            t = (k * inner + j) / max(1, total - 1)
            opt.param_groups[0]["lr"] = LR_END + 0.5 * (LR_START - LR_END) * (1.0 + math.cos(math.pi * t))
            opt.zero_grad(set_to_none=True)
            _lagrangian(ev, u, lam, mu, sc).sum().backward()  # rows are independent: per-row gradients
            u.grad.nan_to_num_(0.0, 0.0, 0.0)  # a start where the model or a constraint is undefined stays put
            opt.step()
            with torch.no_grad():
                u.clamp_(0.0, 1.0)
        if m:
            with torch.no_grad():
                r = ev.residuals(ev.inputs(u))
                g = sc.g(r)
                lam = torch.where(sc.eq, lam + mu * g, torch.relu(lam + mu * g))
                viol = sc.violation(r)
                mu = torch.where((viol > 0.25 * last).unsqueeze(1), (mu * MU_GROWTH).clamp(max=MU_MAX), mu)
                last = viol
    return u.detach()


def _restore(ev: _Evaluator, u: torch.Tensor, sc: _Scaled, iters: int = 8) -> torch.Tensor:
    """Gauss-Newton projection onto the equalities and violated inequalities (minimum-norm
    steps, inputs held at a bound they would cross are left out of the step)."""
    m = sc.eq.shape[0]
    if m == 0 or u.shape[1] == 0:
        return u
    for _ in range(iters):
        u = u.detach().requires_grad_(True)
        g = sc.g(ev.residuals(ev.inputs(u)))
        active = sc.eq | (g > 0)
        ga = torch.where(active, g, torch.zeros_like(g))
        if float(ga.detach().abs().max()) < 1e-13:
            break
        jac = torch.stack([torch.autograd.grad(ga[:, i].sum(), u, retain_graph=i < m - 1)[0] for i in range(m)], 1)
        with torch.no_grad():
            step = -(torch.linalg.pinv(jac) @ ga.unsqueeze(-1)).squeeze(-1)
            blocked = ((u <= 0) & (step < 0)) | ((u >= 1) & (step > 0))
            if bool(blocked.any()):
                step = -(torch.linalg.pinv(jac * ~blocked.unsqueeze(1)) @ ga.unsqueeze(-1)).squeeze(-1)
            u = (u + step).clamp(0.0, 1.0)
    return u.detach()


def _starts(n_problems: int, starts: int, d: int, seed: int, device: torch.device) -> torch.Tensor:
    """Scrambled Sobol starts in the unit box, the same set for every problem."""
    if d == 0:
        return torch.zeros(n_problems * starts, 0, dtype=torch.float64, device=device)
    pts = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(starts, dtype=torch.float64)
    return pts.repeat(n_problems, 1).to(device)


def _pick(ev: _Evaluator, u: torch.Tensor, sc: _Scaled, starts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per problem: the winning row, whether it is feasible, and how many starts were feasible."""
    with torch.no_grad():
        x = ev.inputs(u)
        f = (sc.fsign * ev.objective(x)).view(-1, starts)
        v = sc.violation(ev.residuals(x)).view(-1, starts)
    ok = (v <= FEAS_TOL) & torch.isfinite(f)
    score = torch.where(ok, f, torch.full_like(f, math.inf))
    least = torch.where(torch.isfinite(v), v, torch.full_like(v, math.inf)).argmin(dim=1)
    col = torch.where(ok.any(dim=1), score.argmin(dim=1), least)
    rows = torch.arange(f.shape[0], device=f.device) * starts + col
    return rows.cpu().numpy(), ok.any(dim=1).cpu().numpy(), ok.sum(dim=1).cpu().numpy()


# ----------------------------------------------------------------------------- training data
def load_training_inputs(sur: "SurrogateLike") -> tuple[Optional[np.ndarray], str]:
    """The training rows' inputs (in ``in_lbl`` order), re-read with the reader from the
    data section of the checkpoint's run config, and a note. (None, why) when unavailable.

    The run's split (``train_split``, ``split_seed``) is repeated, so these are the rows the
    model was fitted to; if their range no longer matches the checkpoint's, the file changed
    and all rows now present are used (the note says so).
    """
    from ..data.datamodule import split_indices
    from ..data.reader import load_rollouts

    data = run_data_section(sur.config)
    if not data.get("hdf5_path"):
        return None, "the checkpoint does not record its training data (run_config.data.hdf5_path)"
    paths = resolve_data_path(data["hdf5_path"], sur.run_dir)
    try:
        table = load_rollouts(paths, list(data.get("in_lbl") or sur.in_lbl), list(data.get("out_lbl") or sur.out_lbl),
                              aliases=data.get("aliases") or {}, on_missing=data.get("on_missing", "error"),
                              on_nonfinite=data.get("on_nonfinite", "error"), cache=bool(data.get("cache", True)),
                              cache_dir=data.get("cache_dir"))
    except RollfitError as exc:
        return None, f"the training data could not be read ({str(exc).splitlines()[0]})"
    order = [list(table.in_lbl).index(lbl) for lbl in sur.in_lbl] if set(sur.in_lbl) <= set(table.in_lbl) else None
    if order is None:
        return None, "the training data's input labels differ from the model's"
    x = table.inputs[:, order].astype(np.float64)
    rows, _ = split_indices(len(x), float(data.get("train_split", 1.0)), int(data.get("split_seed", 0)))
    if not sur.bounds_are_estimated and len(rows):
        lo, hi = sur._bounds_arrays()
        same = lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
        if not (same(x[rows].min(0), lo) and same(x[rows].max(0), hi)):
            return x, f"the data in {paths} changed since training: distances are to all {len(x)} rows it holds now"
    return x[rows], f"training rows ({len(rows)}) re-read from {paths}"


def nearest_training_points(points: np.ndarray, train: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (in units of ``std`` per input) from each point to its nearest training row, and that row's index."""
    p = torch.as_tensor(np.asarray(points, np.float64) / std)
    best = torch.full((p.shape[0],), math.inf, dtype=torch.float64)
    arg = torch.zeros(p.shape[0], dtype=torch.long)
    for start in range(0, len(train), 65536):
        t = torch.as_tensor(np.asarray(train[start:start + 65536], np.float64) / std)
        d, i = torch.cdist(p, t).min(dim=1)
        better = d < best
        best, arg = torch.where(better, d, best), torch.where(better, i + start, arg)
    return best.numpy(), arg.numpy()


def median_spacing(train: np.ndarray, std: np.ndarray, limit: int = 1000) -> float:
    """Median distance (std units) from a training row to its nearest other row, over up to
    ``limit`` rows: the yardstick for "far from the data"."""
    x = torch.as_tensor(np.asarray(train, np.float64) / std)
    if x.shape[0] < 2:
        return math.nan
    pick = np.random.default_rng(0).choice(x.shape[0], min(limit, x.shape[0]), replace=False)
    q, two = x[pick], None
    for start in range(0, x.shape[0], 65536):
        d = torch.cdist(q, x[start:start + 65536])
        k = torch.topk(d, min(2, d.shape[1]), dim=1, largest=False).values
        two = k if two is None else torch.topk(torch.cat([two, k], 1), 2, dim=1, largest=False).values
    return float(two[:, 1].median())  # the smallest is the row itself


# ----------------------------------------------------------------------------- results
def _edge_warnings(prob: _Problem, x: np.ndarray) -> list[str]:
    """Free inputs whose optimum sits on a bound of the search range."""
    out = []
    for i in prob.free:
        lo, hi = prob.lo[i], prob.hi[i]
        if hi <= lo:
            continue
        u = (x[i] - lo) / (hi - lo)
        if u <= EDGE_TOL or u >= 1 - EDGE_TOL:
            side = "lower" if u <= EDGE_TOL else "upper"
            out.append(f"{prob.in_lbl[i]}={x[i]:.6g} is at the {side} end of its search range "
                       f"[{lo:.6g}, {hi:.6g}]: the optimum may lie beyond it")
    return out


def _result(sur: "SurrogateLike", prob: _Problem, p: int, x: np.ndarray, resid: np.ndarray, feasible: bool,
            n_feasible: int, starts: int) -> OptimizationResult:
    """One problem's answer in original units (outputs predicted by the surrogate itself)."""
    if sur.has_std:
        mean, std = sur.predict(x[None, :], return_std=True)
        y, sd = mean[0].astype(float), std[0].astype(float)
    else:
        y, sd = sur.predict(x[None, :].astype(np.float32))[0].astype(float), None
    outputs = {lbl: float(y[k]) for k, lbl in enumerate(sur.out_lbl)}
    objective = float(prob.target({k: float(v) for k, v in outputs.items()}))
    uncertainty: dict[str, Any] = {}
    if sd is not None:
        f_std = float(target_with_std(prob.target, sur.out_lbl, torch.as_tensor(y[None, :]),
                                      torch.as_tensor(sd[None, :]))[1][0])
        uncertainty = dict(output_std={lbl: float(sd[k]) for k, lbl in enumerate(sur.out_lbl)},
                           objective_std=f_std, risk_objective=objective + prob.sign * prob.risk * f_std)
    cons = {c.text: float(resid[j]) for j, c in enumerate(prob.constraints)}
    worst_violation = max((float(c.violation(float(resid[j]))) for j, c in enumerate(prob.constraints)), default=0.0)
    if feasible:
        message = f"optimum found ({n_feasible} of {starts} starts feasible)"
    elif not prob.constraints:
        message = "failed: the objective is not finite at any start (the model returns NaN or inf)"
    else:
        worst = max(prob.constraints, key=lambda c: float(c.violation(float(cons[c.text]))))
        message = (f"infeasible: no start satisfies the constraints within the search range; the closest "
                   f"point misses '{worst.text}' by {float(worst.violation(float(cons[worst.text]))):.4g}")
    return OptimizationResult(
        target=prob.target_text, maximize=prob.sign < 0, inputs={lbl: float(v) for lbl, v in zip(prob.in_lbl, x)},
        outputs=outputs, constraints=cons, feasible=bool(feasible), objective=objective, message=message,
        max_violation=worst_violation,
        warnings=list(prob.warnings) + _edge_warnings(prob, x),
        fixed={prob.in_lbl[i]: float(prob.fixed_values[p, j]) for j, i in enumerate(prob.fixed)},
        bounds={prob.in_lbl[i]: (float(prob.lo[i]), float(prob.hi[i])) for i in prob.free},
        params={k: float(v[p]) for k, v in prob.params.items()}, starts=starts, feasible_starts=int(n_feasible),
        risk=prob.risk, **uncertainty)


def _add_distances(sur: "SurrogateLike", results: list[OptimizationResult], train: Optional[np.ndarray], note: str) -> None:
    """Fill distance fields (and a "far from the data" warning) from the training inputs."""
    if train is None or len(train) == 0:
        for r in results:
            r.distance_note = f"distance to the training data unknown: {note}" if train is None else "no training rows"
        return
    std = sur.model.input_std.detach().cpu().numpy().astype(np.float64)
    pts = np.array([[r.inputs[lbl] for lbl in sur.in_lbl] for r in results])
    dist, idx = nearest_training_points(pts, train, std)
    spacing = median_spacing(train, std)
    for r, d, i in zip(results, dist, idx):
        r.distance_to_nearest_training_point = float(d)
        r.nearest_training_point = {lbl: float(v) for lbl, v in zip(sur.in_lbl, train[i])}
        r.distance_note = (f"in training standard deviations of the inputs; median spacing between "
                           f"training points {spacing:.3g}; {note}")
        if math.isfinite(spacing) and d > FAR_FACTOR * spacing:
            r.warnings.append(f"the optimum is {d:.3g} std from the nearest training point, more than "
                              f"{FAR_FACTOR:g}x the median spacing {spacing:.3g}: the model extrapolates there")


def _device(name: Any, sur: "SurrogateLike") -> torch.device:
    """The torch device to optimize on: the model's by default; ``auto``: cuda if present."""
    if name is None:
        return sur.model.input_mean.device
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: expected a torch device such as cpu, cuda or auto, but got '{name}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: expected a usable CUDA device for '{name}', but torch sees none; use cpu")
    return dev


@contextlib.contextmanager
def _cpu_threads(device: torch.device, rows: int) -> Iterator[None]:
    """Run small CPU batches on one thread: a 64-row MLP step is ~1 ms of work, and thread
    hand-offs cost more than that (9-23x slower measured on a busy 2-core machine)."""
    if device.type != "cpu" or rows > SINGLE_THREAD_ROWS or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _solve_problems(sur: "SurrogateLike", prob: _Problem, starts: int, seed: int, device: Any,
                    train: Optional[np.ndarray], distances: bool, steps: int) -> list[OptimizationResult]:
    """Optimize every problem of ``prob`` at once; one result per problem."""
    if int(starts) < 1:
        raise ConfigError(f"starts: expected a positive number of starts, but got {starts}")
    if int(steps) < OUTER:
        raise ConfigError(f"steps: expected at least {OUTER} optimizer steps, but got {steps}")
    d = len(prob.free)
    starts = int(starts) if d else 1
    dev = _device(device, sur)
    with _cpu_threads(dev, prob.n * starts):
        ev = _Evaluator(sur, prob, starts, dev)
        u = _starts(prob.n, starts, d, seed, dev)
        sc = _scaling(ev, d, seed)
        if d:
            u = _restore(ev, _adam_al(ev, u, sc, int(steps)), sc)
        rows, feasible, n_ok = _pick(ev, u, sc, starts)
        with torch.no_grad():
            picked = torch.as_tensor(rows, device=dev)
            x = ev.inputs(u[picked], picked)
            r = ev.residuals(x, picked)
    x, r = x.cpu().numpy(), r.cpu().numpy()
    results = [_result(sur, prob, p, x[p], r[p], feasible[p], n_ok[p], starts) for p in range(prob.n)]
    if distances:
        note = "training inputs given by the caller"
        if train is None:
            train, note = load_training_inputs(sur)
        _add_distances(sur, results, train, note)
    else:
        for res in results:
            res.distance_note = "distance to the training data not computed (distances=False)"
    return results


# ----------------------------------------------------------------------------- public API
def optimize(surrogate: "SurrogateLike", target: str, maximize: bool = False,
             fix: Optional[Mapping[str, float]] = None,
             bounds: Optional[Mapping[str, Sequence[Optional[float]]]] = None,
             constraints: Optional[Sequence[str]] = None, starts: int = 64, seed: int = 0,
             device: Any = None, *, training_inputs: Optional[np.ndarray] = None,
             distances: bool = True, steps: int = STEPS, risk: float = 0.0) -> OptimizationResult:
    """The inputs minimizing (``maximize``: maximizing) ``target`` under the given conditions.

    ``target``: an output label or an expression over output labels (``"cot + 0.1*effort"``).
    ``fix``: input -> value held constant (outside the training range: allowed, with a
    warning). ``bounds``: input -> (low, high) search range (None keeps the training bound on
    that side); default the training range. ``constraints``: expressions over input labels
    such as ``"gait_stride*gait_cadence=1.2"`` or ``"gait_stride/gait_cadence<=1.3"``.
    ``starts`` random starts are optimized together on ``device`` (default: the model's).
    ``training_inputs`` (N, D) replaces re-reading the training data for the distance;
    ``distances=False`` skips it. ``steps``: Adam steps (the step size decays over them).
    ``risk`` k >= 0: minimize ``target + k std(target)`` (maximize ``target - k std(target)``),
    a risk-averse optimum that avoids inputs where the model is unsure; k > 0 needs a model
    kind with an uncertainty. Infeasible problems return ``feasible=False`` and say so in ``message``.
    """
    prob = _build_problem(surrogate, target, maximize, dict(fix or {}), bounds, list(constraints or []), {}, 1,
                          risk)
    return _solve_problems(surrogate, prob, starts, seed, device, training_inputs, distances, steps)[0]


def sweep_optimum(surrogate: "SurrogateLike", target: str, vary: Mapping[str, Sequence[float]],
                  maximize: bool = False, fix: Optional[Mapping[str, float]] = None,
                  bounds: Optional[Mapping[str, Sequence[Optional[float]]]] = None,
                  constraints: Optional[Sequence[str]] = None, starts: int = 64, seed: int = 0,
                  device: Any = None, *, training_inputs: Optional[np.ndarray] = None,
                  distances: bool = True, steps: int = STEPS, risk: float = 0.0) -> SweepResult:
    """The optimum at every combination of the ``vary`` values (all solved as one batch).

    A ``vary`` name that is an input is fixed at each value; any other name is a symbol that
    the ``constraints`` use, e.g. ``vary={"speed": np.linspace(0.8, 1.4, 13)}`` with
    ``constraints=["gait_stride*gait_cadence=speed"]``. Other options (``risk`` too) as in
    ``optimize``; a model with an uncertainty adds ``<output>_std``, ``objective_std`` and
    ``risk_objective`` columns.
    """
    names, grids = _vary_grids(surrogate, vary, fix)
    combos = np.array(list(itertools.product(*grids)), dtype=np.float64).reshape(-1, len(names))
    fixed: dict[str, Any] = dict(fix or {})
    params: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        (fixed if name in surrogate.in_lbl else params)[name] = combos[:, j]
    prob = _build_problem(surrogate, target, maximize, fixed, bounds, list(constraints or []), params, len(combos),
                          risk)
    used = {n for c in prob.constraints for n in c.names}
    for name in params:
        if name not in used:
            raise ConfigError(f"vary {name}: expected an input label or a name used in a constraint, but got "
                              f"'{name}'{did_you_mean(name, list(surrogate.in_lbl) + sorted(used))}")
    results = _solve_problems(surrogate, prob, starts, seed, device, training_inputs, distances, steps)
    rows = [_sweep_row(surrogate, names, combos[p], res) for p, res in enumerate(results)]
    return SweepResult(target, names, rows, results, list(prob.warnings))


def _vary_grids(sur: "SurrogateLike", vary: Mapping[str, Sequence[float]],
                fix: Optional[Mapping[str, float]]) -> tuple[list[str], list[np.ndarray]]:
    """Swept names and their values, checked: at least one, non-empty, finite, not also fixed."""
    if not vary:
        raise ConfigError("vary: expected at least one NAME with values to sweep, but got none")
    names, grids = [], []
    for name, values in vary.items():
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size == 0 or not np.all(np.isfinite(v)):
            raise ConfigError(f"vary {name}: expected one or more finite values, but got {list(v)}")
        if fix and name in fix:
            raise ConfigError(f"{name}: expected either a fixed value or a swept one, but got both")
        names.append(str(name))
        grids.append(v)
    return names, grids


def _sweep_row(sur: "SurrogateLike", names: list[str], values: np.ndarray, res: OptimizationResult) -> dict[str, Any]:
    """One CSV row: swept values, optimal inputs, predicted outputs, objective, status."""
    row: dict[str, Any] = {n: float(v) for n, v in zip(names, values)}
    row.update({lbl: v for lbl, v in res.inputs.items() if lbl not in row})
    row.update({(lbl if lbl not in row else f"predicted_{lbl}"): v for lbl, v in res.outputs.items()})
    row.update({f"{lbl}_std": v for lbl, v in res.output_std.items()})
    row["objective"] = res.objective
    if res.objective_std is not None:
        row.update({"objective_std": res.objective_std, "risk_objective": res.risk_objective})
    row.update({"feasible": res.feasible, "max_violation": res.max_violation,
                "distance_to_nearest_training_point": res.distance_to_nearest_training_point})
    return row


# ----------------------------------------------------------------------------- CSV and plot
def sweep_csv_text(sweep: SweepResult) -> str:
    """The sweep's rows as CSV text (full float precision, empty cell for an unknown value)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(sweep.columns)
    for row in sweep.rows:
        writer.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row.values()])
    return buf.getvalue()


def write_sweep_csv(sweep: SweepResult, path: str | Path) -> Path:
    """Write the sweep's rows as CSV, atomically."""
    from ..io import atomic_write_text

    atomic_write_text(path, sweep_csv_text(sweep))
    return Path(path)


def sweep_plot_data(sweep: SweepResult, in_lbl: Sequence[str]) -> dict[str, Any]:
    """What the sweep plot draws: x values (the first swept name), and per panel (each
    optimized input, then the objective) one line per combination of the other swept names;
    ``feasible`` marks the points that met the constraints; ``objective_std`` (a model with an
    uncertainty, else absent) gives the objective's 95% band."""
    xname, others = sweep.vary[0], sweep.vary[1:]
    panels = [lbl for lbl in in_lbl if lbl not in sweep.vary] + ["objective"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in sweep.rows:
        groups.setdefault(tuple(row[n] for n in others), []).append(row)
    lines = []
    for key, rows in groups.items():
        label = ", ".join(f"{n}={v:.4g}" for n, v in zip(others, key))
        line = {"label": label, "x": [r[xname] for r in rows], "feasible": [bool(r["feasible"]) for r in rows],
                **{p: [r[p] for r in rows] for p in panels}}
        if all("objective_std" in r for r in rows):
            line["objective_std"] = [r["objective_std"] for r in rows]
        lines.append(line)
    risk = sweep.results[0].risk if sweep.results else 0.0
    return {"x": xname, "panels": panels, "lines": lines, "target": sweep.target, "risk": risk,
            "maximize": bool(sweep.results and sweep.results[0].maximize)}


def plot_sweep(sweep: SweepResult, in_lbl: Sequence[str]):
    """A figure with one panel per optimized input and one for the objective along the sweep
    (an Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = sweep_plot_data(sweep, in_lbl)
    n = len(data["panels"])
    fig = Figure(figsize=(6.0, 1.9 * n + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)
    for ax, panel in zip(axes[:, 0], data["panels"]):
        for line in data["lines"]:
            x, y, ok = np.asarray(line["x"]), np.asarray(line[panel], float), np.asarray(line["feasible"])
            drawn = ax.plot(x, y, "o-", ms=3, label=line["label"] or None)
            if panel == "objective" and "objective_std" in line:
                band = Z95 * np.asarray(line["objective_std"], float)
                ax.fill_between(x, y - band, y + band, color=drawn[0].get_color(), alpha=0.2, linewidth=0)
            if (~ok).any():
                ax.plot(x[~ok], y[~ok], "x", color="red", ms=7, label="infeasible")
        ax.set_ylabel(f"{data['target']}\n(optimum)" if panel == "objective" else panel)
        ax.grid(alpha=0.3)
    if any(line["label"] for line in data["lines"]) or any(not all(line["feasible"]) for line in data["lines"]):
        axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel(data["x"])
    risk = data.get("risk") or 0.0
    what = f"risk-averse optimum ({'-' if data.get('maximize') else '+'}{risk:g} std) of" if risk else "optimum of"
    band = ", 95% band shaded" if any("objective_std" in line for line in data["lines"]) else ""
    axes[0, 0].set_title(f"{what} {data['target']} along {data['x']}{band}")
    fig.tight_layout()
    return fig


def write_sweep_plot(sweep: SweepResult, in_lbl: Sequence[str], path: str | Path, dpi: int = 100) -> Path:
    """Draw the sweep and save it as PNG, atomically."""
    import io

    from ..io import atomic_write_bytes

    buf = io.BytesIO()
    plot_sweep(sweep, in_lbl).savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
