"""``rollfit demo``: write a synthetic real-format rollout file and train on it.

The file's cost surface is known (``rollfit.data.synthetic.true_cot``), so the demo can
say how close the surrogate came to the truth, not only to the noisy data.
"""
from __future__ import annotations

ORDER = 0

import argparse
from pathlib import Path

from .main import add_debug

DEMO_OVERRIDES = ["trainer.max_epochs=3001", "trainer.lr=0.01", "trainer.save_period=1000",
                  "trainer.log_period=50", "data.train_split=0.8"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train on built-in synthetic data", description=(
        "Write a synthetic rollout file (a known U-shaped cost over gait_stride and gait_cadence, with noise, "
        "outliers and failed runs) and train a surrogate on it."))
    p.add_argument("--output", default="rollfit_demo", help="folder for the data file and the run (default: %(default)s)")
    p.add_argument("--groups", type=int, default=400, help="number of param groups to simulate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. trainer.max_epochs=500")
    add_debug(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..config import load_config
    from ..data.synthetic import make_demo_file, true_cot
    from ..training.checkpoint import load_model
    from ..training.run import train

    out = Path(args.output)
    data_file = make_demo_file(out / "rollout_data.h5", n=args.groups, seed=args.seed)
    print(f"wrote synthetic rollouts: {data_file}")
    cfg = load_config(None, DEMO_OVERRIDES + list(args.overrides))
    cfg.data.hdf5_path = str(data_file)
    cfg.data.cache = False
    result = train(cfg, out / "run")
    model, _, _ = load_model(result.run_dir)
    grid = np.stack(np.meshgrid(np.linspace(0.75, 1.25, 41), np.linspace(0.75, 1.25, 41)), -1).reshape(-1, 2)
    pred = model.predict(grid.astype(np.float32)).numpy()[:, 0]  # in_lbl order: cadence, stride
    rmse = float(np.sqrt(np.mean((pred - true_cot(grid[:, 1], grid[:, 0])) ** 2)))
    print(f"trained on {len(result.table)} rows ({result.table.n_failed} failed runs left out)")
    print(f"RMSE against the noise-free surface: {rmse:.3f} (data noise std ~1)")
    print(f"run folder: {result.run_dir}")
    return 0
