"""Gaussian-process kinds ``gp`` and ``robust_gp``: exact GPs through BoTorch/GPyTorch.

``gp``: one BoTorch ``SingleTaskGP`` per output (independent GPs; a ``ModelListGP`` when there
are several) with a Matern-5/2 kernel with one length scale per input (ARD) times an output
scale, inputs scaled to the unit cube by a ``Normalize`` input transform (bounds = training
min/max), outputs standardized by ``Standardize``, a learned homoskedastic noise, float64.
``robust_gp``: BoTorch's ``RobustRelevancePursuitSingleTaskGP`` with the same kernel and
transforms; relevance pursuit gives a few training rows (gross outliers) their own extra
noise, so they stop pulling the mean. The flagged rows are kept (``outlier_support``).

All GP algebra (Cholesky, posterior, marginal likelihood, fitting) is GPyTorch's and
BoTorch's. ``fit_gp`` maximizes the marginal likelihood with ``fit_gpytorch_mll`` from
several initial hyperparameters and keeps the best (see ``GPSettings`` for why); up to 250
rows ``select_prior`` also fits one start under BoTorch's dimension-scaled length-scale prior
and keeps it where its leave-one-out error is the smaller (few rows per input). Every
solve runs under ``exact()``: GPyTorch would switch to approximate iterative solves above
800 rows.

The module keeps its training rows and the fitted hyperparameters in its ``state_dict``;
``build_from_config(cfg)`` + ``load_state_dict(strict=True)`` rebuild the fitted model
exactly (``load_state_dict`` first rebuilds the BoTorch models on the stored rows).
The std is calibrated after the fit (``calibrate``): the marginal-likelihood fit of a smooth,
noise-free function gives intervals far too wide (branin: 100% of held-out rows inside the
95% interval), because the Matern kernel is rougher than the function. Each output's std is
scaled by the factor that makes the leave-one-out 95% intervals of the training rows cover
95% of them (split-conformal calibration on the GP's own leave-one-out residuals, which
need no refit: Rasmussen & Williams 2006, eq. 5.12). The mean is unchanged.

``export_module()`` gives the posterior mean as a plain torch module (a kernel sum over the
stored rows with GPyTorch's own prediction cache as weights) for the ONNX, pt2 and C exports.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, TrainingError
from .kinds import KindSpec, as_input, register_kind

DTYPE = torch.float64
KINDS = ("gp", "robust_gp")
PRIORS = ("none", "dim_scaled", "select")


@dataclass(frozen=True)
class GPSettings:
    """How a GP's hyperparameters are fitted (chosen on the accuracy benchmark as a whole).

    BoTorch's defaults (length-scale priors pulling towards its dimension-scaled mode, a
    noise floor of 1e-4 in standardized units) were 2-5x less accurate than scikit-learn's
    maximum-likelihood GP with restarts on smooth, clean problems. Here the fit is maximum
    likelihood with every scale on a log scale (``_log_positive``) and bounded above
    (``UPPER``), the noise may go down to ``noise_floor`` (a noise-free function needs it),
    and the likelihood is maximized from several starts (the first at moderate values, the
    rest drawn log-uniformly), keeping the best. Measured (scratch runs on the benchmark's
    problems; bench_accuracy.py has the table): borehole 100/500 rows 0.24/0.063 RMSE,
    wing weight 0.49/0.088, against scikit-learn's 0.29/0.075 and 1.50/0.13 on the same
    designs. With few rows per input that maximum is often poor (every length scale at its
    bound, or the rows explained as noise); ``prior="select"`` then keeps a fit under the
    dimension-scaled prior when it predicts the left-out rows better (``select_prior``).
    """

    restarts: int = 5                # starts up to ``few_starts_above`` rows (a small design has poor optima)
    few_starts_above: int = 250      # above this many rows: ``few_starts`` (each start costs rows^3; measured:
    few_starts: int = 2              # one start was as good as five at 500 rows, much worse at 100)
    noise_floor: float = 1e-9        # lower bound of the noise variance (standardized units; branin 500 rows:
                                     # RMSE 0.0025 with 1e-9, 0.0074 with 1e-6)
    lengthscale_range: tuple[float, float] = (0.05, 5.0)  # where restarts draw length scales (unit cube)
    maxiter: int = 500               # L-BFGS-B iterations per start
    seed: int = 0
    # robust_gp: the outlier fractions relevance pursuit compares (BoTorch's default list
    # runs up to 100% of the rows, which costs minutes; gross outliers are a few percent)
    outlier_fractions: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2)
    pursuit: str = "backward"        # robust_gp: relevance pursuit removing outliers from all rows (backward) or
                                     # adding them (forward: 7x faster, but missed outliers: rmse 2.3 vs 0.58)
    # length-scale prior: "none" (maximum likelihood), "dim_scaled" (BoTorch's), or "select": the
    # maximum-likelihood fit or a one-start fit under the dim-scaled prior, whichever has the smaller
    # leave-one-out error (``select_prior``). Neither fixed choice wins everywhere: the prior is far
    # better on the 13-input tilted rollout surface below ~70 rows, worse where few inputs matter
    # (the bowl surface) and on rollout_170 (benchmarks/bench_gp_prior.py has the table)
    prior: str = "select"
    robust_prior: str = "select"
    select_max_rows: int = 250       # "select" above this many rows: maximum likelihood (the likelihood
                                     # outweighs the prior there; saves the extra fit)
    robust_restarts: int = 5         # robust_gp: starts (each a whole relevance pursuit), at most ``restarts``
    calibration: float | None = 0.95  # std calibrated so leave-one-out intervals at this level cover it (None:
                                      # the marginal-likelihood std; branin held-out 95% coverage 100% -> 95%)


DEFAULT_SETTINGS = GPSettings()


# ----------------------------------------------------------------------------- BoTorch models
def exact():
    """GPyTorch settings for exact algebra at every size: Cholesky solves (GPyTorch switches
    to iterative CG/Lanczos approximations above 800 rows by default)."""
    import gpytorch

    return gpytorch.settings.max_cholesky_size(1 << 30)


def _bounds(x: Tensor) -> Tensor:
    """(2, D) training min/max for ``Normalize``; a constant column gets a unit-wide box."""
    lo, hi = x.min(dim=0).values, x.max(dim=0).values
    hi = torch.where(hi > lo, hi, lo + 1.0)
    return torch.stack([lo, hi])


def _log_positive(lower: float, initial: float):
    """A constraint ``lower + exp(raw)``: the optimizer works on log scales, as for length
    scales and variances that span orders of magnitude it should."""
    from gpytorch.constraints import GreaterThan

    return GreaterThan(lower, transform=torch.exp, inv_transform=torch.log, initial_value=initial)


def _kernel(d: int, prior_name: str):
    """Matern-5/2 with one length scale per input, times an output scale."""
    from gpytorch.kernels import MaternKernel, ScaleKernel
    from gpytorch.priors import LogNormalPrior

    if prior_name not in PRIORS:
        raise ValueError(f"GPSettings prior: expected one of {', '.join(PRIORS)}, but got {prior_name!r}")
    # "select" builds the maximum-likelihood model; its prior candidate is built as "dim_scaled"
    prior = LogNormalPrior(math.sqrt(2) + 0.5 * math.log(d), math.sqrt(3)) if prior_name == "dim_scaled" else None
    base = MaternKernel(nu=2.5, ard_num_dims=d, lengthscale_prior=prior,
                        lengthscale_constraint=_log_positive(1e-4, 0.5 if prior is None else float(prior.mode)))
    return ScaleKernel(base, outputscale_constraint=_log_positive(1e-6, 1.0))


def _likelihood(settings: GPSettings):
    from gpytorch.likelihoods import GaussianLikelihood

    return GaussianLikelihood(noise_constraint=_log_positive(settings.noise_floor, 1e-2))


def make_gp(x: Tensor, y: Tensor, robust: bool = False, support: Sequence[int] = (),
            settings: GPSettings = DEFAULT_SETTINGS):
    """An unfitted BoTorch GP for one output: ``x`` (N, D), ``y`` (N, 1), raw units, float64.

    ``robust``: a ``RobustRelevancePursuitSingleTaskGP`` whose outlier support starts as
    ``support`` (row indices; a fitted model's support, to rebuild it for loading).
    """
    from botorch.exceptions.warnings import InputDataWarning
    from botorch.models import SingleTaskGP
    from botorch.models.robust_relevance_pursuit_model import (
        RobustRelevancePursuitSingleTaskGP,
    )
    from botorch.models.transforms.input import Normalize
    from botorch.models.transforms.outcome import Standardize

    d = x.shape[-1]
    cls = RobustRelevancePursuitSingleTaskGP if robust else SingleTaskGP
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputDataWarning)
        model = cls(x, y, likelihood=_likelihood(settings), covar_module=_kernel(d, settings.robust_prior if robust else settings.prior),
                    input_transform=Normalize(d, bounds=_bounds(x)), outcome_transform=Standardize(m=1))
    if robust and support:
        model.likelihood.noise_covar.expand_support(list(support))
    return model.to(x)


def _mll_value(model) -> float:
    """The marginal log likelihood (per row, priors included) of ``model``. A fresh
    ``ExactMarginalLogLikelihood``: relevance pursuit replaces a robust model's likelihood."""
    from gpytorch.mlls import ExactMarginalLogLikelihood

    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    with torch.no_grad(), exact():
        out = model(*model.train_inputs)
        # the likelihood gets the transformed inputs, as BoTorch's fitting closure passes them: a
        # robust likelihood applies its rho to the rows it has seen (and caches them)
        inputs = [model.transform_inputs(x) for x in model.train_inputs]
        return float(mll(out, model.train_targets, *inputs).sum())


def _initialize(model, rng: torch.Generator, settings: GPSettings) -> None:
    """Random starting hyperparameters for a restart: length scales log-uniform in
    ``lengthscale_range``, output scale near 1, noise log-uniform in [noise_floor*10, 0.1]."""
    lo, hi = (math.log(v) for v in settings.lengthscale_range)
    base = model.covar_module.base_kernel
    ls = torch.exp(lo + (hi - lo) * torch.rand(base.lengthscale.shape, generator=rng, dtype=DTYPE))
    noise_lo, noise_hi = math.log(settings.noise_floor * 10), math.log(0.1)
    noise = math.exp(noise_lo + (noise_hi - noise_lo) * float(torch.rand((), generator=rng, dtype=DTYPE)))
    outputscale = math.exp(float(torch.empty((), dtype=DTYPE).uniform_(-1.0, 1.0, generator=rng)))
    base.lengthscale = ls.to(base.lengthscale)
    model.covar_module.outputscale = outputscale
    noise_module = model.likelihood.noise_covar
    target = noise_module.base_noise if hasattr(noise_module, "base_noise") else noise_module
    target.noise = torch.full_like(target.noise, noise)


# upper limits of the hyperparameters (standardized outputs, unit-cube inputs): beyond them the
# fit only drifts towards a polynomial limit with an ill-conditioned kernel matrix
UPPER = {"raw_lengthscale": 1e4, "raw_outputscale": 1e4, "raw_noise": 10.0}


def _raw_bounds(mll) -> dict[str, tuple[float, float]]:
    """L-BFGS-B bounds on the log-scale raw hyperparameters (``_log_positive``): value <= UPPER."""
    return {name: (-40.0, math.log(UPPER[name.rsplit(".", 1)[-1]]))
            for name, _ in mll.named_parameters() if name.rsplit(".", 1)[-1] in UPPER}


def _quiet_scipy(mll, **kwargs):
    """BoTorch's L-BFGS-B fit, its warnings (an early line-search stop, the iteration limit)
    silenced: BoTorch would treat them as a failed attempt and refit from the same start,
    several times; the restarts and the likelihood comparison take care of poor optima."""
    from botorch.optim.fit import fit_gpytorch_mll_scipy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_gpytorch_mll_scipy(mll, **kwargs)


def starts(settings: GPSettings, rows: int, robust: bool = False) -> int:
    """How many starts a fit of ``rows`` training rows makes (``GPSettings``); relevance
    pursuit (``robust``) makes at most ``robust_restarts``: it refits once per outlier
    fraction already."""
    n = settings.restarts if rows <= settings.few_starts_above else min(settings.restarts, settings.few_starts)
    return max(1, min(n, settings.robust_restarts) if robust else n)


def fit_gp(model, settings: GPSettings = DEFAULT_SETTINGS, output: int = 0) -> float:
    """Maximize the marginal likelihood of ``model`` from ``starts`` starts with BoTorch's
    ``fit_gpytorch_mll``; keeps the best start (``_start_score``). Returns its marginal log
    likelihood per row.

    A start whose optimization fails (a non-PSD matrix, an optimizer error) is skipped; when
    all fail, a one-line ``TrainingError`` names the last failure.
    """
    from botorch.exceptions.errors import ModelFittingError
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    robust = hasattr(model, "custom_fit")
    rng = torch.Generator().manual_seed(settings.seed * 1000 + output)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    initial = _snapshot(model)
    best, best_mll, best_state, error = -math.inf, -math.inf, None, None
    for start in range(starts(settings, model.train_targets.shape[-1], robust)):
        _restore(model, initial)
        model.train()
        if start > 0:
            _initialize(model, rng, settings)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs: dict[str, Any] = {"optimizer": _quiet_scipy, "optimizer_kwargs": {
                    "options": {"maxiter": settings.maxiter}, "bounds": _raw_bounds(mll)}}
                if robust:
                    from botorch.models import relevance_pursuit as rp

                    kwargs["fractions_of_outliers"] = list(settings.outlier_fractions)
                    kwargs["relevance_pursuit_optimizer"] = (rp.forward_relevance_pursuit if settings.pursuit == "forward"
                                                             else rp.backward_relevance_pursuit)
                else:  # restarts are ours: one attempt per start
                    kwargs["max_attempts"] = 1
                with exact():
                    fit_gpytorch_mll(mll, **kwargs)
            value, mll_value = _start_score(model, robust)
        except (ModelFittingError, RuntimeError, ValueError) as exc:  # linear_operator's NotPSDError is a RuntimeError
            error = exc
            continue
        if math.isfinite(value) and value > best:
            best, best_mll, best_state = value, mll_value, _snapshot(model)
    if best_state is None:
        last = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}" if error else "no finite value"
        raise TrainingError(f"gp fit: expected a finite marginal likelihood from at least one start, but every start "
                            f"failed (last: {last}); check the training rows for duplicates with different values "
                            f"or non-finite numbers")
    _restore(model, best_state)
    model.eval()
    return best_mll


def selects_prior(settings: GPSettings, rows: int, robust: bool) -> bool:
    """Whether a fit of ``rows`` rows also fits a prior candidate (``select_prior``)."""
    return (settings.robust_prior if robust else settings.prior) == "select" and rows <= settings.select_max_rows


def select_prior(model, x: Tensor, y: Tensor, settings: GPSettings = DEFAULT_SETTINGS, output: int = 0) -> float | None:
    """Fit ``model``'s twin under BoTorch's dimension-scaled length-scale prior (one start) and
    keep whichever of the two has the smaller mean squared leave-one-out error over the rows
    neither flags as outliers; ``model`` (already fitted by maximum likelihood on ``x``, ``y``)
    takes the twin's hyperparameters (and outlier support) when the twin wins.

    Why: with few rows per input the likelihood alone often explains the rows as noise or
    stretches every length scale to its bound, and the prior's pull fixes that; where few
    inputs matter, the prior's pull towards shorter scales in every input costs accuracy. The
    leave-one-out error (closed form, ``loo_errors``) tells the cases apart without a refit
    (how often it picks the more accurate fit: ``benchmarks/bench_gp_prior.py``). Returns the
    kept twin's marginal log likelihood per row, or None when ``model`` stays as it was.
    """
    robust = hasattr(model, "custom_fit")
    settings = twin_settings(settings)
    twin = make_gp(x, y, robust, settings=settings)
    try:
        value = fit_gp(twin, settings, output)
    except TrainingError:
        return None
    if not twin_is_better(model, twin):
        return None
    support, state = _snapshot(twin)
    names = model.state_dict().keys()  # the twin's also hold its prior's buffers
    _restore(model, (support, {k: v for k, v in state.items() if k in names}))
    return value


def twin_settings(settings: GPSettings) -> GPSettings:
    """How ``select_prior`` fits its twin: under the dim-scaled prior, from one start."""
    import dataclasses

    return dataclasses.replace(settings, prior="dim_scaled", robust_prior="dim_scaled", restarts=1)


def twin_is_better(model, twin) -> bool:
    """Whether ``twin`` (the same rows, other hyperparameters) has the smaller mean squared
    leave-one-out error over the rows neither flags as outliers."""
    keep = torch.ones(model.train_targets.shape[-1], dtype=torch.bool)
    keep[support_of(model) + support_of(twin)] = False
    mine, theirs = (float(loo_errors(m)[keep].square().mean()) for m in (model, twin))
    return math.isfinite(theirs) and theirs < mine


def _support_log_prior(model) -> float:
    """The log prior of a robust model's number of flagged rows: BoTorch's exponential prior
    of relevance pursuit (mean ``prior_mean_of_support``, 20% of the rows)."""
    mean = max(float(model.prior_mean_of_support), 1.0)
    return -len(model.likelihood.noise_covar.support) / mean - math.log(mean)


def _start_score(model, robust: bool) -> tuple[float, float]:
    """(score, marginal log likelihood per row) of a fitted start. A robust model's score is
    its log evidence, the whole training set's marginal log likelihood, plus the log prior of
    its number of flagged rows: Bayesian model comparison of the starts. (BoTorch ranks the
    supports within one pursuit by the per-row likelihood plus that prior, where the prior
    outweighs the data: ranked so across starts, on the benchmark's noisy rollout surface a
    start that flagged none of the gross outliers won and predicted worse.)"""
    per_row = _mll_value(model)
    if not robust:
        return per_row, per_row
    return per_row * model.train_targets.shape[-1] + _support_log_prior(model), per_row


def _snapshot(model) -> tuple[list[int], dict[str, Tensor]]:
    """(outlier support, state) of a fitted model; a robust model's rho in its sparse form."""
    import copy

    noise = model.likelihood.noise_covar
    support: list[int] = []
    if hasattr(noise, "support"):
        noise.to_sparse()
        support = list(noise.support)
    return support, copy.deepcopy(model.state_dict())


def _restore(model, snap: tuple[list[int], dict[str, Tensor]]) -> None:
    """Put a snapshot back (the robust support first, so the shapes agree)."""
    support, state = snap
    noise = model.likelihood.noise_covar
    if hasattr(noise, "support"):
        noise.remove_support()
        noise._is_sparse = True
        if support:
            noise.expand_support(support)
    model.train()  # drops GPyTorch's prediction caches of the previous state
    model.load_state_dict(state)
    if hasattr(noise, "support"):
        noise._cached_train_inputs = None  # the next call with the training rows sets it again
    model.eval()


def loo_residuals(model) -> Tensor:
    """Standardized leave-one-out residuals ``(y_i - mu_-i) / sigma_-i`` of a fitted model's
    training rows, in closed form from one Cholesky factor of ``K + noise`` (Rasmussen &
    Williams 2006, eq. 5.12: ``mu_-i = y_i - [K^-1 y]_i / [K^-1]_ii``, ``sigma_-i^2 =
    1 / [K^-1]_ii``); a robust model's flagged rows keep their own noise."""
    weights, diagonal = _loo_terms(model)
    return weights / diagonal.sqrt()


def loo_errors(model) -> Tensor:
    """Leave-one-out errors ``y_i - mu_-i`` of a fitted model's training rows, in its
    standardized output units (``[K^-1 y]_i / [K^-1]_ii``, as in ``loo_residuals``)."""
    weights, diagonal = _loo_terms(model)
    return weights / diagonal


def _loo_terms(model) -> tuple[Tensor, Tensor]:
    """``K^-1 (y - m)`` and the diagonal of ``K^-1`` (``K``: the training rows' covariance with
    their noise), from one Cholesky factor."""
    from linear_operator.utils.cholesky import psd_safe_cholesky

    model.train()
    try:
        with torch.no_grad(), exact():
            inputs = [model.transform_inputs(x) for x in model.train_inputs]
            joint = model.likelihood(model(*model.train_inputs), *inputs)
            inverse = torch.cholesky_inverse(psd_safe_cholesky(joint.covariance_matrix))
            return inverse @ (model.train_targets - joint.mean), inverse.diagonal()
    finally:
        model.eval()


def calibration_scale(model, level: float) -> float:
    """The factor on a fitted model's std that makes ``level`` of its leave-one-out intervals
    cover their row: the ``ceil(level (n + 1))``-th smallest ``|z|`` over the normal quantile
    (split-conformal, on rows not flagged as outliers). 1 with fewer than 3 such rows."""
    z = loo_residuals(model).abs()
    keep = torch.ones_like(z, dtype=torch.bool)
    keep[support_of(model)] = False
    z = z[keep]
    if z.numel() < 3 or not bool(torch.isfinite(z).all()):
        return 1.0
    rank = min(z.numel(), math.ceil(level * (z.numel() + 1)))
    quantile = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2, dtype=DTYPE))
    scale = float(z.sort().values[rank - 1] / quantile)
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def support_of(model) -> list[int]:
    """The training rows a robust GP gives their own noise (empty for a plain GP)."""
    noise = model.likelihood.noise_covar
    return sorted(int(i) for i in getattr(noise, "support", []))


# ----------------------------------------------------------------------------- the kind's module
CHUNK = 2048  # test rows per posterior call: the cross-covariance is CHUNK x training rows


class GPSurrogate(nn.Module):
    """A fitted exact GP per output behind the ``Predictor`` face (``model.kinds``).

    ``train_x`` (N, D) and ``train_y`` (N, K) are the training rows in raw units; ``gps``
    holds one BoTorch model per output (``make_gp``), unfitted until ``fit`` runs or a
    fitted state is loaded. ``outlier_support``: per output, the rows a fitted ``robust_gp``
    gave their own noise (in the order BoTorch keeps them). ``input_mean``/``input_std``/
    ``target_mean``/``target_std`` are the training statistics (rollfit's usual buffers).
    """

    def __init__(self, train_x: Tensor, train_y: Tensor, robust: bool = False,
                 outlier_support: Sequence[Sequence[int]] | None = None, activation: str = "gelu",
                 input_mean: Tensor | None = None, input_std: Tensor | None = None,
                 target_mean: Tensor | None = None, target_std: Tensor | None = None,
                 settings: GPSettings = DEFAULT_SETTINGS):
        super().__init__()
        x, y = torch.as_tensor(train_x, dtype=DTYPE), torch.as_tensor(train_y, dtype=DTYPE)
        if y.ndim == 1:
            y = y[:, None]
        self.kind = KINDS[1] if robust else KINDS[0]
        self.robust, self.activation, self.settings = bool(robust), str(activation), settings
        self.input_dim, self.output_dim = int(x.shape[1]), int(y.shape[1])
        self.outlier_support = [list(map(int, s)) for s in (outlier_support or [[] for _ in range(self.output_dim)])]
        self.register_buffer("train_x", x.clone())
        self.register_buffer("train_y", y.clone())
        self.register_buffer("input_mean", _stat(input_mean, x.mean(0)))
        self.register_buffer("input_std", _stat(input_std, _spread(x)))
        self.register_buffer("target_mean", _stat(target_mean, y.mean(0)))
        self.register_buffer("target_std", _stat(target_std, _spread(y)))
        self.register_buffer("std_scale", torch.ones(self.output_dim, dtype=DTYPE))
        self.gps = nn.ModuleList(self._make_models())

    def _make_models(self) -> list:
        """One BoTorch model per output on the stored rows (robust ones with their support)."""
        return [make_gp(self.train_x, self.train_y[:, j:j + 1], self.robust, self.outlier_support[j], self.settings)
                for j in range(self.output_dim)]

    # ---- fitting and state
    def fit(self) -> list[float]:
        """Fit every output's GP (``fit_gp``) and calibrate its std (``calibration_scale``);
        the marginal log likelihood per row of each."""
        values = []
        for j, gp in enumerate(self.gps):
            value = fit_gp(gp, self.settings, output=j)
            if selects_prior(self.settings, self.train_x.shape[0], self.robust):
                kept = select_prior(gp, self.train_x, self.train_y[:, j:j + 1], self.settings, output=j)
                value = value if kept is None else kept
            values.append(value)
            self.outlier_support[j] = list(getattr(gp.likelihood.noise_covar, "support", []))
            level = self.settings.calibration
            self.std_scale[j] = 1.0 if level is None else calibration_scale(gp, level)
        return values

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False):
        """Load a fitted state: the stored rows first, the BoTorch models rebuilt on them (so
        their transforms and training data are the fitted ones), then every tensor."""
        x, y = state_dict.get("train_x"), state_dict.get("train_y")
        if x is not None and y is not None and x.shape == self.train_x.shape and y.shape == self.train_y.shape:
            with torch.no_grad():
                self.train_x.copy_(x)
                self.train_y.copy_(y)
            self.gps = nn.ModuleList(self._make_models()).to(self.train_x)
        if "std_scale" not in state_dict:  # written before calibration existed: the std it always gave
            state_dict = {**state_dict, "std_scale": torch.ones(self.output_dim, dtype=DTYPE)}
        scale = torch.as_tensor(state_dict["std_scale"])
        if scale.shape == (self.output_dim,) and not bool((torch.isfinite(scale) & (scale > 0)).all()):
            raise CheckpointError(f"std_scale: expected {self.output_dim} positive finite factor(s), but got "
                                  f"{[float(v) for v in scale[:4]]}")
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.eval()
        return result

    def constructor_args(self) -> dict:
        """Plain-typed arguments that rebuild this module's shape (stored in checkpoints); the
        fitted numbers come with the state_dict."""
        return {"kind": self.kind, "input_dim": self.input_dim, "output_dim": self.output_dim,
                "n_train": int(self.train_x.shape[0]), "layers": [], "residual": False,
                "activation": self.activation, "target_convention": "raw",
                "outlier_support": [list(s) for s in self.outlier_support],
                **{k: getattr(self, k).detach().cpu().tolist()
                   for k in ("input_mean", "input_std", "target_mean", "target_std")}}

    # ---- predictions
    def _x(self, x: Tensor) -> Tensor:
        return torch.as_tensor(x, device=self.train_x.device).to(self.train_x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Posterior mean (N, K) in original units for raw inputs (N, D), differentiable in x."""
        import gpytorch

        x = self._x(x)
        with exact(), gpytorch.settings.skip_posterior_variances(True):
            parts = [torch.cat([gp.posterior(c).mean for gp in self.gps], dim=-1) for c in x.split(CHUNK)]
        return torch.cat(parts) if parts else x.new_zeros((0, self.output_dim))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Raw inputs -> posterior mean in original units, without gradients."""
        return self.forward(as_input(self, x))

    def predict_std(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) in original units, differentiable; std is that of a new observation at x
        (the GP's uncertainty plus its learned noise; a robust GP's plain noise, not the
        extra noise of its flagged rows), times the calibration factor ``std_scale``."""
        x = self._x(x)
        means, stds = [], []
        with exact():
            for c in x.split(CHUNK):
                mu, var = zip(*(self._mean_var(gp, c) for gp in self.gps))
                means.append(torch.cat(mu, dim=-1))
                stds.append(torch.cat(var, dim=-1).clamp_min(0.0).sqrt() * self.std_scale)
        if not means:
            return (x.new_zeros((0, self.output_dim)),) * 2
        return torch.cat(means), torch.cat(stds)

    def _mean_var(self, gp, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of a new observation for one output's GP."""
        if not self.robust:
            post = gp.posterior(x, observation_noise=True)
            return post.mean, post.variance
        post = gp.posterior(x)  # the robust likelihood's rho belongs to training rows only
        noise = gp.likelihood.noise_covar.base_noise.noise * gp.outcome_transform.stdvs.square()
        return post.mean, post.variance + noise

    def botorch_model(self):
        """The fitted BoTorch model in raw input space: the ``SingleTaskGP`` (or robust one)
        for one output, a ``ModelListGP`` of them for several. Above 800 training rows use it
        under ``exact()`` (GPyTorch's default switches to approximate solves there)."""
        from botorch.models import ModelListGP

        return self.gps[0] if self.output_dim == 1 else ModelListGP(*self.gps)

    def outliers(self) -> list[tuple[int, int]]:
        """(training row, output index) of every row a robust GP flagged, sorted."""
        return sorted((int(i), j) for j, s in enumerate(self.outlier_support) for i in s)

    def export_module(self) -> GPMean:
        """The posterior mean as a plain torch module (no GPyTorch inside), for the exports."""
        return GPMean.of(self)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, rows={self.train_x.shape[0]}, input_dim={self.input_dim}, output_dim={self.output_dim}"


def _spread(v: Tensor) -> Tensor:
    """Column std (biased), 1 for a constant column (as ``data.datamodule.normalization_stats``)."""
    s = v.std(0, unbiased=False) if len(v) > 1 else torch.ones(v.shape[1], dtype=v.dtype)
    return torch.where(s > 0, s, torch.ones_like(s))


def _stat(value: Tensor | Sequence[float] | None, default: Tensor) -> Tensor:
    return (default if value is None else torch.as_tensor(value, dtype=DTYPE).reshape(-1)).clone().to(DTYPE)


# ----------------------------------------------------------------------------- the exported mean
SQRT5 = math.sqrt(5.0)


class GPMean(nn.Module):
    """``mean_k(x) = bias_k + sum_i alpha_ki m52(|(x - offset_k) * scale_k - rows_ki|)``, plain torch.

    The posterior mean of a fitted ``GPSurrogate`` written as a kernel sum, for ONNX, pt2 and C:
    ``m52(r) = (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r)`` (Matern-5/2); ``offset``/``scale`` put the
    inputs in each output's length-scale units (the ``Normalize`` transform divided by the
    length scales), ``rows`` are the training inputs so scaled, ``alpha`` is GPyTorch's own
    prediction cache (K + noise)^-1 (y - mean) times the output scale and the target std, and
    ``bias`` the constant mean in original units. Shapes: offset, scale (K, D); rows (K, N, D);
    alpha (K, N); bias (K,).
    """

    def __init__(self, offset: Tensor, scale: Tensor, rows: Tensor, alpha: Tensor, bias: Tensor):
        super().__init__()
        self.input_dim, self.output_dim = int(offset.shape[1]), int(offset.shape[0])
        for name, value in (("offset", offset), ("scale", scale), ("rows", rows), ("alpha", alpha), ("bias", bias)):
            self.register_buffer(name, value.detach().clone())

    @classmethod
    @torch.no_grad()
    def of(cls, model: GPSurrogate) -> GPMean:
        """The kernel sum of ``model``'s fitted GPs (prediction caches computed if needed)."""
        model.eval()
        model.forward(model.train_x[:1])  # fills each GP's prediction cache
        parts = [_terms(gp, model.train_x) for gp in model.gps]
        return cls(*(torch.stack(p) for p in zip(*parts)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, D) raw inputs -> (B, K) means, in ``x``'s dtype; computed in the buffers' dtype
        (float64: keep it, the weights of a GP of noise-free data are large and of both signs,
        so a float32 sum loses the mean; float32 inputs are fine)."""
        dtype = x.dtype
        x = x.to(self.rows.dtype)
        z = (x[None, :, :] - self.offset[:, None, :]) * self.scale[:, None, :]           # (K, B, D)
        d2 = (z[:, :, None, :] - self.rows[:, None, :, :]).square().sum(-1)               # (K, B, N)
        r = d2.clamp_min(1e-30).sqrt()
        k = (1.0 + SQRT5 * r + (5.0 / 3.0) * d2) * torch.exp(-SQRT5 * r)
        return ((k * self.alpha[:, None, :]).sum(-1).transpose(0, 1) + self.bias).to(dtype)


def _terms(gp, train_x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(offset, scale, rows, alpha, bias) of one fitted output's GP."""
    tf, out = gp.input_transform, gp.outcome_transform
    ls = gp.covar_module.base_kernel.lengthscale.reshape(-1)
    offset = tf.offset.reshape(-1)
    scale = 1.0 / (tf.coefficient.reshape(-1) * ls)
    ystd, ymean = out.stdvs.reshape(()), out.means.reshape(())
    cache = gp.prediction_strategy.mean_cache.reshape(-1)
    alpha = cache * gp.covar_module.outputscale.reshape(()) * ystd
    bias = gp.mean_module.constant.reshape(()) * ystd + ymean
    return offset, scale, (train_x - offset) * scale, alpha, bias


# ----------------------------------------------------------------------------- registration
def build_from_config(cfg: dict[str, Any]) -> GPSurrogate:
    """A ``GPSurrogate`` of the checkpoint's shape (placeholder rows; ``load_state_dict``
    puts the fitted rows and hyperparameters in)."""
    n, d, k = _check_shape(cfg)
    return GPSurrogate(torch.zeros(n, d, dtype=DTYPE), torch.zeros(n, k, dtype=DTYPE),
                       robust=str(cfg.get("kind")) == KINDS[1], outlier_support=cfg.get("outlier_support"),
                       activation=str(cfg.get("activation", "gelu")),
                       input_mean=cfg.get("input_mean"), input_std=cfg.get("input_std"),
                       target_mean=cfg.get("target_mean"), target_std=cfg.get("target_std"))


MAX_ROWS_STORED = 1 << 20  # no GP checkpoint holds more rows (a crafted n_train must not allocate terabytes)


def _check_shape(cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(rows, inputs, outputs) of a GP checkpoint's config, checked: one-line errors for bad values."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    n, d, k = cfg.get("n_train"), cfg.get("input_dim"), cfg.get("output_dim")
    if not (is_int(n) and 1 <= n <= MAX_ROWS_STORED):
        raise CheckpointError(f"config.n_train: expected the GP's training row count (1 to {MAX_ROWS_STORED}), "
                              f"but got {n!r}")
    support = cfg.get("outlier_support", [[] for _ in range(int(k))])
    if not (isinstance(support, list) and len(support) == k and all(
            isinstance(s, list) and len(set(s)) == len(s) and all(is_int(i) and 0 <= i < n for i in s) for s in support)):
        raise CheckpointError(f"config.outlier_support: expected {k} list(s) of distinct row indices below {n}, "
                              f"but got {str(support)[:60]}")
    return int(n), int(d), int(k)


register_kind(KindSpec("gp", build_from_config, has_std=True, resumable=False, exports=("onnx", "pt2", "c"),
                       summary="exact Gaussian process (BoTorch), Matern-5/2 ARD; mean and std"))
register_kind(KindSpec("robust_gp", build_from_config, has_std=True, resumable=False, exports=("onnx", "pt2", "c"),
                       summary="Gaussian process that finds and down-weights gross outliers (BoTorch relevance pursuit)"))
