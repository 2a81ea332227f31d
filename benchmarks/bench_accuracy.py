"""Accuracy: every rollfit model kind against scikit-learn's regressors, in one run.

    python benchmarks/bench_accuracy.py [--problems borehole_100,diabetes] [--kinds gp,sklearn_gp]
                                        [--quick] [--output DIR] [--fresh] [--threads 1]

Problems (``benchmarks/problems.py``): borehole, wing weight and branin on LHS designs of
100 and 500 points (5,000-point test design, scored against the function), scikit-learn's
bundled diabetes data (fixed split) and a noisy 13-input rollout surface with 3% gross
outliers (scored against the noise-free surface).

Models: rollfit's kinds ``mlp`` (the example config ``examples/seed_config.yaml`` as it is),
``ensemble``, ``gp``, ``robust_gp`` and ``auto`` (the same config with only ``model.kind``
changed: no other tuning), each trained from the problem's rollout file through
``pipeline.run.train`` and used through ``Surrogate.load``, as a user runs them; and
scikit-learn's ``GaussianProcessRegressor`` (Matern 5/2 ARD * constant + white noise,
normalize_y, 5 optimizer restarts, inputs scaled to the unit cube), ``MLPRegressor``
(64-64, standardized inputs and outputs) and ``HistGradientBoostingRegressor`` (defaults).

Scores: RMSE of the mean against the truth on the test rows; for models with a predictive
std, the coverage of the 95% interval (mean +- 1.96 std) and the mean Gaussian negative log
likelihood of a new observation at the test rows (the truth plus the problem's noise). A
kind that is not registered (yet) is reported as ``missing``; a model that fails is
reported as ``error`` with its one-line reason; neither stops the run.

Results go to ``DIR/accuracy.json`` and ``DIR/accuracy.md`` (default ``benchmarks/results``;
``--quick`` defaults to a temporary folder and tiny problems, a smoke test). A run updates
the cells it computes and keeps the others (``--fresh`` starts over), so one model can be
rerun alone; each cell records when and with which command it was computed.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch start their thread pools

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import readme_block  # noqa: E402
from problems import OUTPUT, PROBLEMS, QUICK, Problem, make_problem  # noqa: E402

REPO = HERE.parent
SEED_CONFIG = REPO / "examples" / "seed_config.yaml"
RESULTS = HERE / "results"
ROLLFIT_KINDS = ("mlp", "ensemble", "gp", "robust_gp", "auto")
PEERS = ("sklearn_gp", "sklearn_mlp", "sklearn_hgb")
MODELS = ROLLFIT_KINDS + PEERS
TITLES = {"mlp": "rollfit mlp (example config)", "ensemble": "rollfit ensemble", "gp": "rollfit gp",
          "robust_gp": "rollfit robust_gp", "auto": "rollfit auto (chosen)", "sklearn_gp": "scikit-learn GP",
          "sklearn_mlp": "scikit-learn MLP", "sklearn_hgb": "HistGradientBoosting"}
QUICK_OVERRIDES = ["trainer.max_epochs=150", "trainer.log_period=50", "trainer.save_period=150",
                   "model.members=2", "model.auto_folds=2"]
Z95 = 1.959963984540054


# ----------------------------------------------------------------------------- scores
def scores(problem: Problem, mean: np.ndarray, std: Optional[np.ndarray]) -> dict[str, Any]:
    """RMSE vs the truth; with a std, 95% coverage and mean NLL of a new observation."""
    mean = np.asarray(mean, np.float64).reshape(-1)
    out: dict[str, Any] = {"rmse": float(np.sqrt(np.mean((mean - problem.y_test) ** 2)))}
    if std is not None:
        std = np.maximum(np.asarray(std, np.float64).reshape(-1), 1e-12)
        r = problem.y_obs - mean
        out["coverage95"] = float(np.mean(np.abs(r) <= Z95 * std))
        out["nll"] = float(np.mean(0.5 * np.log(2 * np.pi * std**2) + 0.5 * (r / std) ** 2))
    return out


# ----------------------------------------------------------------------------- rollfit
def missing_reason(kind: str) -> Optional[str]:
    """Why rollfit's ``kind`` cannot run in this checkout (its fitter or kind not there yet), else None."""
    from rollfit.errors import RollfitError
    from rollfit.model.kinds import kind_spec
    from rollfit.pipeline.fitting import FITTERS

    if kind not in FITTERS:
        return f"no fitter for kind '{kind}'"
    module, _, name = FITTERS[kind].partition(":")
    try:
        if not hasattr(importlib.import_module(module), name):
            return f"{module} has no {name}"
    except ImportError as exc:
        return f"{module} is not importable ({exc})"
    if kind != "auto":
        try:
            kind_spec(kind)
        except RollfitError:
            return f"kind '{kind}' is not registered"
    return None


def rollfit_config(kind: str, problem: Problem, path: Path, quick: bool, extra: list[str]):
    """The example config with the problem's file and labels, ``model.kind`` set and nothing else tuned."""
    from rollfit.config import load_config

    overrides = [f"model.kind={kind}", "trainer.progress=false", "trainer.report=false", "data.cache=false"]
    cfg = load_config(SEED_CONFIG, overrides + (QUICK_OVERRIDES if quick else []) + extra)
    cfg.data.hdf5_path = str(path)
    cfg.data.in_lbl = list(problem.in_lbl)
    cfg.data.out_lbl = [OUTPUT]
    return cfg


def fit_rollfit(kind: str, problem: Problem, path: Path, work: Path, quick: bool,
                extra: list[str]) -> dict[str, Any]:
    """Train ``kind`` from the problem's file, load the run, predict the test rows."""
    import torch

    from rollfit.analysis.surrogate import Surrogate
    from rollfit.model.kinds import as_input, kind_of, kind_spec
    from rollfit.pipeline.run import train

    cfg = rollfit_config(kind, problem, path, quick, extra)
    note = None
    if kind == "auto":  # while a candidate kind is not in this checkout, auto compares the others (said in the cell)
        absent = [c for c in cfg.model.auto_candidates if missing_reason(c) is not None]
        if absent:
            cfg.model.auto_candidates = [c for c in cfg.model.auto_candidates if c not in absent]
            note = f"without {', '.join(absent)} (not in this checkout)"
    result = train(cfg, work / f"{problem.name}_{kind}")
    s = Surrogate.load(result.run_dir)
    chosen = kind_of(s.config)
    std = None
    if kind_spec(chosen).has_std:
        with torch.no_grad():
            mean_t, std_t = s.model.predict_std(as_input(s.model, s.as_matrix(problem.x_test)))
        mean, std = mean_t.double().cpu().numpy(), std_t.double().cpu().numpy()
    else:
        mean = s.predict(problem.x_test)
    out = scores(problem, mean, std)
    if kind == "auto":
        out["chosen"] = chosen
        auto = s.config.get("auto") or {}
        out["cv"] = {c: row.get("cv") for c, row in (auto.get("table") or {}).items()}
        if note:
            out["note"] = note
    return out


# ----------------------------------------------------------------------------- scikit-learn
def sklearn_gp(problem: Problem, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """Matern 5/2 ARD * constant + white noise, normalize_y, restarts; inputs in the unit cube."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    lo, hi = problem.x_train.min(axis=0), problem.x_train.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    d = problem.x_train.shape[1]
    kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * Matern(np.ones(d), (1e-2, 1e3), nu=2.5)
              + WhiteKernel(1e-4, (1e-10, 1e1)))
    gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=1 if quick else 5, random_state=0)
    gp.fit((problem.x_train - lo) / scale, problem.y_train)
    mean, std = gp.predict((problem.x_test - lo) / scale, return_std=True)
    return mean, std


def sklearn_mlp(problem: Problem, quick: bool) -> tuple[np.ndarray, None]:
    """MLPRegressor (64, 64), Adam, standardized inputs and outputs."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    net = MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=200 if quick else 3000, n_iter_no_change=50, tol=1e-7, random_state=0)
    model = TransformedTargetRegressor(make_pipeline(StandardScaler(), net), transformer=StandardScaler())
    model.fit(problem.x_train, problem.y_train)
    return model.predict(problem.x_test), None


def sklearn_hgb(problem: Problem, quick: bool) -> tuple[np.ndarray, None]:
    """HistGradientBoostingRegressor with its defaults."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(random_state=0).fit(problem.x_train, problem.y_train)
    return model.predict(problem.x_test), None


PEER_FITS: dict[str, Callable[[Problem, bool], tuple[np.ndarray, Optional[np.ndarray]]]] = {
    "sklearn_gp": sklearn_gp, "sklearn_mlp": sklearn_mlp, "sklearn_hgb": sklearn_hgb}


# ----------------------------------------------------------------------------- one cell
def run_cell(model: str, problem: Problem, path: Path, work: Path, quick: bool, extra: list[str]) -> dict[str, Any]:
    """Fit and score one model on one problem; a missing kind or a failure is a result, not a crash."""
    if model in ROLLFIT_KINDS:
        why = missing_reason(model)
        if why is not None:
            return {"status": "missing", "note": why}
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if model in ROLLFIT_KINDS:
                out = fit_rollfit(model, problem, path, work, quick, extra)
            else:
                out = scores(problem, *PEER_FITS[model](problem, quick))
    except Exception as exc:  # reported in the table; the other cells still run
        from rollfit.training.signals import TrainingInterrupted

        if isinstance(exc, TrainingInterrupted):  # Ctrl-C or SIGTERM stops the benchmark, not just this cell
            raise
        traceback.print_exc(limit=3)
        why = (str(exc).splitlines() or [""])[0].replace(str(work.parent), "<tmp>")
        return {"status": "error", "note": f"{type(exc).__name__}: {why}", "seconds": round(time.perf_counter() - start, 2)}
    return {"status": "ok", **out, "seconds": round(time.perf_counter() - start, 2)}


# ----------------------------------------------------------------------------- the tables
def _num(v: Optional[float], digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"


def best_peer(cells: dict[str, dict[str, Any]]) -> Optional[float]:
    """The lowest RMSE among scikit-learn's models on a problem."""
    vals = [cells[m]["rmse"] for m in PEERS if cells.get(m, {}).get("status") == "ok"]
    return min(vals) if vals else None


def _cell(c: Optional[dict[str, Any]], model: str) -> str:
    if not c:
        return "not run"
    if c["status"] != "ok":
        return c["status"]
    text = _num(c["rmse"])
    return f"{text} ({c['chosen']})" if model == "auto" and c.get("chosen") else text


def markdown(results: dict[str, Any]) -> str:
    """The tables README and docs quote: RMSE per problem and model, auto against the best peer,
    then coverage and NLL of the models with a std, then fit times."""
    cells = results["cells"]
    problems = [p for p in PROBLEMS if p in cells] + [p for p in cells if p not in PROBLEMS]
    head = ["problem", *[TITLES[m] for m in MODELS], "auto / best peer"]
    lines = ["Test RMSE against the truth (lower is better):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in problems:
        row = cells[p]
        peer, auto = best_peer(row), row.get("auto", {})
        ratio = _num(auto["rmse"] / peer, 3) if peer and auto.get("status") == "ok" else "-"
        lines.append(f"| {p} | " + " | ".join(_cell(row.get(m), m) for m in MODELS) + f" | {ratio} |")
    # auto's intervals are those of the kind it chose (its column above says which)
    with_std = [m for m in MODELS if m != "auto" and any("coverage95" in cells[p].get(m, {}) for p in problems)]
    if with_std:
        head = ["problem", *[TITLES[m] for m in with_std]]
        lines += ["", "Coverage of the 95% interval / mean negative log likelihood, on the test rows "
                  "(auto's intervals are those of the kind it chose):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in problems:
            cs = [cells[p].get(m, {}) for m in with_std]
            lines.append(f"| {p} | " + " | ".join(
                f"{100 * c['coverage95']:.0f}% / {_num(c['nll'])}" if "coverage95" in c else "-" for c in cs) + " |")
    head = ["problem", *[TITLES[m] for m in MODELS]]
    lines += ["", "Fit time in seconds (train, save, load, predict; shared 2-core CPU, so indicative only):", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in problems:
        lines.append(f"| {p} | " + " | ".join(_num(cells[p].get(m, {}).get("seconds"), 3) for m in MODELS) + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    import torch

    return (f"{platform.machine()} {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
            f"torch {torch.__version__}, {sys.platform}")


def load_results(path: Path, fresh: bool) -> dict[str, Any]:
    if path.is_file() and not fresh:
        return json.loads(path.read_text())
    return {"cells": {}}


def public_command(command: str) -> str:
    """The command without the folders it named (--output, --merge): results hold no machine paths."""
    return re.sub(r"\s--(output|merge)(=|\s+)\S+", "", command)


def merge(results: dict[str, Any], other: dict[str, Any]) -> None:
    """Take ``other``'s cells (and problem descriptions) into ``results``; ``other`` wins a cell both have."""
    for name, cells in other.get("cells", {}).items():
        for cell in cells.values():
            cell["command"] = public_command(cell.get("command", ""))
        results["cells"].setdefault(name, {}).update(cells)
    results.setdefault("problems", {}).update(other.get("problems", {}))


def save_results(results: dict[str, Any], out: Path) -> None:
    """``accuracy.json`` and ``accuracy.md``, each written atomically."""
    from rollfit.io import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "accuracy.json", results)
    atomic_write_text(out / "accuracy.md", markdown(results))


# ----------------------------------------------------------------------------- main
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated, of: " + ", ".join(PROBLEMS))
    p.add_argument("--kinds", default=",".join(MODELS), help="comma-separated models, of: " + ", ".join(MODELS))
    p.add_argument("--quick", action="store_true", help="tiny problems and short training: a smoke test")
    p.add_argument("--output", type=Path, default=None,
                   help="folder of accuracy.json/.md (default benchmarks/results; --quick: a temporary folder)")
    p.add_argument("--fresh", action="store_true", help="start a new results file instead of updating it")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--merge", type=Path, action="append", default=[],
                   help="fold the cells of another run's results folder into --output's (runs split over processes)")
    p.add_argument("--readme", action="store_true",
                   help="paste accuracy.md into README.md's accuracy block (the table README quotes)")
    p.add_argument("--table-only", action="store_true",
                   help="rewrite accuracy.md from accuracy.json (after a change of the table's layout); run nothing")
    p.add_argument("--override", action="append", default=[],
                   help="extra dotted config override for the rollfit kinds (tuning experiments only)")
    args = p.parse_args(argv)
    args.problems = _choices(args.problems, list(QUICK if args.quick else PROBLEMS), "--problems")
    args.kinds = _choices(args.kinds, list(MODELS), "--kinds")
    return args


def _choices(text: str, allowed: list[str], flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise SystemExit(f"{flag}: expected names from {', '.join(allowed)}, but got {', '.join(bad) or 'none'}")
    return items


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    command = public_command("python benchmarks/bench_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    out = args.output or (Path(tempfile.mkdtemp(prefix="rollfit-acc-")) if args.quick else RESULTS)
    results = load_results(out / "accuracy.json", args.fresh)
    for other in args.merge:
        merge(results, json.loads((other / "accuracy.json").read_text()))
    if args.table_only or args.merge or args.readme:
        save_results(results, out)
        if args.readme:
            readme_block.paste("accuracy", (out / "accuracy.md").read_text())
        print(markdown(results))
        return 0
    results["machine"] = machine()
    with tempfile.TemporaryDirectory(prefix="rollfit-acc-") as tmp:
        for name in args.problems:
            problem = make_problem(name, args.quick)
            path = problem.write(Path(tmp) / "data")
            results.setdefault("problems", {})[name] = problem.about
            for model in args.kinds:
                cell = run_cell(model, problem, path, Path(tmp) / "runs", args.quick, args.override)
                cell.update(when=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), command=command)
                results["cells"].setdefault(name, {})[model] = cell
                save_results(results, out)
                shown = {k: v for k, v in cell.items() if k not in ("when", "command")}
                print(f"{name:14s} {model:12s} {json.dumps(shown)}", flush=True)
    print(markdown(results))
    print(f"written: {out / 'accuracy.md'}, {out / 'accuracy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
