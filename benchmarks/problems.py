"""The accuracy benchmark's problems, each with its truth, written as real rollout files.

Three standard surrogate test functions (borehole, 8 inputs; wing weight, 10; branin, 2)
on seeded Latin-hypercube designs of 100 and 500 points, scored on a 5,000-point test
design against the exact function; scikit-learn's bundled diabetes data (442 patients, 10
inputs; no download) with a fixed train/test split; and noisy rollout surfaces from the
project's synthetic generator (13 inputs, noise std 1 and 3% gross outliers of +15..25, as a
failed-but-marked-successful simulation gives), scored against the noise-free surface.

``Problem.write(folder)`` writes the training rows as a rollout file in the real format
(``rollfit.data.synthetic.write_rollout_file``), so rollfit is benchmarked the way a user
runs it: train from the file, load the run, predict. Inputs are stored as float32 (as
``param_state`` is), so the truth is evaluated at the float32-rounded inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from scipy.stats import qmc

from rollfit.data.synthetic import campaign_rows, true_cot, write_rollout_file

OUTPUT = "y"             # the output attribute (and label) of every problem's file
TEST_ROWS = 5000         # the test design of the synthetic problems
OUTLIER_FRACTION = 0.03  # gross outliers in the noisy rollout surfaces
NOISE_STD = 1.0          # rollout noise (campaign_rows' own)


@dataclass
class Problem:
    """Training rows, test rows and the truth on them.

    ``y_test`` is the noise-free truth (what RMSE is scored against); ``y_obs`` is what a new
    observation at the test inputs would read (``y_test`` plus the problem's noise, without
    gross outliers), what the 95% interval and NLL of a predictive std are scored against.
    """

    name: str
    in_lbl: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_obs: np.ndarray
    about: str

    @property
    def rows(self) -> int:
        return len(self.x_train)

    def write(self, folder: str | Path) -> Path:
        """The training rows as ``<folder>/<name>/rollout_data.h5``; returns its path."""
        path = Path(folder) / self.name / "rollout_data.h5"
        return write_rollout_file(path, self.x_train, {OUTPUT: self.y_train}, param_names=self.in_lbl)


# ----------------------------------------------------------------------------- test functions
BOREHOLE_BOUNDS = {"rw": (0.05, 0.15), "r": (100.0, 50000.0), "Tu": (63070.0, 115600.0), "Hu": (990.0, 1110.0),
                   "Tl": (63.1, 116.0), "Hl": (700.0, 820.0), "L": (1120.0, 1680.0), "Kw": (9855.0, 12045.0)}
WING_BOUNDS = {"Sw": (150.0, 200.0), "Wfw": (220.0, 300.0), "A": (6.0, 10.0), "Lambda": (-10.0, 10.0),
               "q": (16.0, 45.0), "lam": (0.5, 1.0), "tc": (0.08, 0.18), "Nz": (2.5, 6.0),
               "Wdg": (1700.0, 2500.0), "Wp": (0.025, 0.08)}
BRANIN_BOUNDS = {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}


def borehole(x: np.ndarray) -> np.ndarray:
    """Water flow through a borehole (m^3/yr), inputs in ``BOREHOLE_BOUNDS`` order."""
    rw, r, tu, hu, tl, hl, length, kw = x.T
    log_ratio = np.log(r / rw)
    return 2 * np.pi * tu * (hu - hl) / (log_ratio * (1 + 2 * length * tu / (log_ratio * rw**2 * kw) + tu / tl))


def wing_weight(x: np.ndarray) -> np.ndarray:
    """Weight of a light aircraft's wing (lb), inputs in ``WING_BOUNDS`` order (sweep in degrees)."""
    sw, wfw, a, sweep, q, lam, tc, nz, wdg, wp = x.T
    cos = np.cos(np.deg2rad(sweep))
    return (0.036 * sw**0.758 * wfw**0.0035 * (a / cos**2) ** 0.6 * q**0.006 * lam**0.04
            * (100 * tc / cos) ** -0.3 * (nz * wdg) ** 0.49 + sw * wp)


def branin(x: np.ndarray) -> np.ndarray:
    """The Branin-Hoo function on [-5, 10] x [0, 15] (three global minima of 0.398)."""
    x1, x2 = x.T
    b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10


FUNCTIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], dict[str, tuple[float, float]]]] = {
    "borehole": (borehole, BOREHOLE_BOUNDS),
    "wing": (wing_weight, WING_BOUNDS),
    "branin": (branin, BRANIN_BOUNDS),
}


def _as_stored(x: np.ndarray) -> np.ndarray:
    """Inputs as a rollout file stores them (float32), back in float64 for the truth."""
    return x.astype(np.float32).astype(np.float64)


def lhs(bounds: dict[str, tuple[float, float]], n: int, seed: int) -> np.ndarray:
    """A seeded Latin-hypercube design of ``n`` points in the box ``bounds``."""
    lo, hi = np.array(list(bounds.values())).T
    unit = qmc.LatinHypercube(d=len(bounds), seed=seed).random(n)
    return _as_stored(qmc.scale(unit, lo, hi))


def function_problem(name: str, n: int, test_rows: int = TEST_ROWS, seed: int = 0) -> Problem:
    """``name`` (borehole, wing, branin) on an ``n``-point LHS design; a separate LHS test design."""
    f, bounds = FUNCTIONS[name]
    x = lhs(bounds, n, seed=1000 + n + seed)
    xt = lhs(bounds, test_rows, seed=7 + seed)
    yt = f(xt)
    return Problem(f"{name}_{n}", list(bounds), x, f(x), xt, yt, yt,
                   f"{name}, {n} LHS points, {len(bounds)} inputs, noise-free; test: {test_rows} LHS points")


def diabetes_problem(test_fraction: float = 0.25, seed: int = 0) -> Problem:
    """scikit-learn's bundled diabetes data (442 rows, 10 inputs), a fixed seeded train/test split.

    The truth of a test row is its recorded value (there is no noise-free truth for real data).
    """
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    x, y = _as_stored(np.asarray(d.data)), np.asarray(d.target, dtype=np.float64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    names = [str(n) for n in d.feature_names]
    return Problem("diabetes", names, x[tr], y[tr], x[te], y[te], y[te],
                   f"scikit-learn diabetes, {len(tr)} training rows, {len(te)} test rows, 10 inputs, real data")


def rollout_truth(x: np.ndarray, tilt: float = 5.0) -> np.ndarray:
    """The noise-free cost of ``synthetic.campaign_rows``: the demo's bowl over (stride, cadence)
    plus ``tilt`` (the generator's 5) times the sum of the other 11 inputs' offsets from 1."""
    return true_cot(x[:, 0], x[:, 1]) + tilt * (x[:, 2:] - 1.0).sum(axis=1)


def rollout_problem(n: int = 170, test_rows: int = TEST_ROWS, seed: int = 0, outliers: float = OUTLIER_FRACTION,
                    tilt: float = 5.0, name: str = "rollout") -> Problem:
    """A noisy 13-input rollout surface from ``synthetic.campaign_rows`` with gross outliers.

    ``n`` rows with the generator's inputs and noise (std 1); ``tilt`` 5 is the generator's
    surface (every input matters), 0 keeps only the bowl (11 inputs that do not matter, as in
    the demo). A fraction ``outliers`` of rows (at least one) is shifted up by 15..25 (a failed
    simulation marked successful). Test rows: uniform in the campaign's box.
    """
    x, y, _ = campaign_rows(n, 13, seed=seed)
    x = _as_stored(x)
    y = np.asarray(y, np.float64) - rollout_truth(x) + rollout_truth(x, tilt)  # the generator's noise, kept
    rng = np.random.default_rng(10_000 + seed)
    bad = rng.choice(n, size=max(1, int(round(outliers * n))), replace=False)
    y[bad] += rng.uniform(15.0, 25.0, len(bad))
    xt = _as_stored(rng.uniform(0.7, 1.3, (test_rows, 13)))
    yt = rollout_truth(xt, tilt)
    from rollfit.data.synthetic import DEFAULT_13_NAMES

    what = "every input matters" if tilt else "only stride and cadence matter"
    return Problem(f"{name}_{n}", list(DEFAULT_13_NAMES), x, y, xt, yt, yt + rng.normal(0.0, NOISE_STD, test_rows),
                   f"noisy rollout surface ({what}), {n} rows, 13 inputs, noise std {NOISE_STD:g}, {len(bad)} gross "
                   f"outliers (+15..25); scored against the noise-free surface on {test_rows} uniform points")


# name -> builder; the benchmark's problems in table order
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "borehole_100": lambda: function_problem("borehole", 100),
    "borehole_500": lambda: function_problem("borehole", 500),
    "wing_100": lambda: function_problem("wing", 100),
    "wing_500": lambda: function_problem("wing", 500),
    "branin_100": lambda: function_problem("branin", 100),
    "branin_500": lambda: function_problem("branin", 500),
    "diabetes": diabetes_problem,
    "rollout_170": lambda: rollout_problem(170),
    "bowl_170": lambda: rollout_problem(170, tilt=0.0, name="bowl"),
}

# tiny versions for a smoke test (--quick)
QUICK: dict[str, Callable[[], Problem]] = {
    "borehole_100": lambda: function_problem("borehole", 24, test_rows=200),
    "wing_100": lambda: function_problem("wing", 24, test_rows=200),
    "branin_100": lambda: function_problem("branin", 20, test_rows=200),
    "diabetes": diabetes_problem,
    "rollout_170": lambda: rollout_problem(40, test_rows=200),
    "bowl_170": lambda: rollout_problem(40, test_rows=200, tilt=0.0, name="bowl"),
}


def make_problem(name: str, quick: bool = False) -> Problem:
    """The problem ``name`` (quick: its tiny version)."""
    return (QUICK if quick else PROBLEMS)[name]()


def describe(names: Optional[list[str]] = None) -> str:
    """One line per problem (for --help and the results file)."""
    return "\n".join(f"{n}: {PROBLEMS[n]().about}" for n in (names or list(PROBLEMS)))
