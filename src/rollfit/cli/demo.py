"""``rollfit demo``: write a synthetic real-format rollout file and train on it.

The file's cost surface is known (``rollfit.data.synthetic.true_cot``), so the demo can
say how close the surrogate came to the truth, not only to the noisy data.
"""
from __future__ import annotations

ORDER = 0

import argparse
from pathlib import Path

from .args import SEED, check_folder, command, integer, load_config_args

DEMO_OVERRIDES = ["trainer.max_epochs=3001", "trainer.lr=0.01", "trainer.save_period=1000",
                  "trainer.log_period=50", "data.train_split=0.8"]


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "demo", "overrides", help="train on built-in synthetic data", description=(
        "Write a synthetic rollout file (a known U-shaped cost over gait_stride and gait_cadence, with noise, "
        "outliers and failed runs) and train a surrogate on it."))
    p.add_argument("--output", metavar="DIR", default="rollfit_demo",
                   help="new folder for the data file and the run (default: %(default)s)")
    p.add_argument("--groups", type=integer(20, 1_000_000), default=400, metavar="N",
                   help="number of param groups to simulate, 20 to 1000000 (default: %(default)s)")
    p.add_argument("--seed", type=SEED, default=0, metavar="N",
                   help="seed of the synthetic data (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_folder(args.output)
    check_no_earlier_demo(Path(args.output), args.overwrite)
    cfg = load_config_args(args, DEMO_OVERRIDES)  # checked before anything is written
    from ..data.synthetic import make_demo_file
    from ..pipeline.run import train

    out = Path(args.output)
    data_file = make_demo_file(out / "rollout_data.h5", n=args.groups, seed=args.seed)
    print(f"wrote synthetic rollouts: {data_file}")
    cfg.data.hdf5_path = str(data_file.resolve())
    cfg.data.cache = False
    result = train(cfg, out / "run", overwrite=args.overwrite)
    print(f"trained on {len(result.table)} rows ({result.table.n_failed} failed runs left out)")
    _report_against_truth(result.run_dir)
    print(f"run folder: {result.run_dir}")
    return 0


def check_no_earlier_demo(out: Path, overwrite: bool) -> None:
    """An earlier demo in ``out`` is kept (its data file too) unless ``--overwrite``."""
    from ..errors import OutputError
    from ..runs.folder import RunFolder

    if not overwrite and RunFolder(out / "run").run_markers():
        raise OutputError(f"{out}: expected a new folder for the demo, but it holds an earlier demo's run; "
                          "replace it with --overwrite, or choose another --output")


def _report_against_truth(run_dir: Path) -> None:
    """Print the fit and the optimum of the surrogate next to the known truth."""
    import numpy as np

    from ..analysis.surrogate import Surrogate
    from ..data.synthetic import DEMO_MIN_COT, DEMO_OPT_CADENCE, DEMO_OPT_STRIDE, true_cot

    s = Surrogate.load(run_dir)
    axis = np.linspace(0.75, 1.25, 41)
    cad, stride = (a.ravel() for a in np.meshgrid(axis, axis))
    pred = s.predict({"gait_cadence": cad, "gait_stride": stride})[:, 0]
    rmse = float(np.sqrt(np.mean((pred - true_cot(stride, cad)) ** 2)))
    print(f"RMSE against the noise-free surface: {rmse:.3f} (data noise std ~1)")
    best = s.optimize("cot_ma15", seed=0)
    x = best.inputs
    print(f"optimum: gait_stride={x['gait_stride']:.4f} gait_cadence={x['gait_cadence']:.4f} "
          f"predicted cot {best.outputs['cot_ma15']:.2f}, true cot there "
          f"{float(true_cot(x['gait_stride'], x['gait_cadence'])):.2f}")
    print(f"truth:   gait_stride={DEMO_OPT_STRIDE:.4f} gait_cadence={DEMO_OPT_CADENCE:.4f} cot {DEMO_MIN_COT:.2f}")
