"""Shared test fixtures: isolated cache, the shared fixtures folder, a demo file, a trained run.

Tests never write outside ``tmp_path``: the reader's cache is pointed at a temporary folder
for every test. ``trained_run`` is a short real training run on the synthetic demo data,
made once per session and shared (read-only) by the tests that need a trained model.
"""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ROLLFIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared fixtures folder (real-format rollout files, an original run); skip if absent."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip("shared/fixtures is not beside this checkout")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def demo_file(tmp_path_factory) -> Path:
    """A synthetic demo rollout file (known surface ``synthetic.true_cot``), 300 groups."""
    from rollfit.data.synthetic import make_demo_file

    return make_demo_file(tmp_path_factory.mktemp("demo") / "rollout_data.h5", n=300, seed=0)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_file) -> Path:
    """A run folder trained briefly on the demo file (train_split 0.8); treat as read-only."""
    from rollfit.config import load_config
    from rollfit.pipeline.run import train

    cfg = load_config(None, ["trainer.max_epochs=600", "trainer.lr=0.01", "trainer.save_period=200",
                             "trainer.log_period=20", "trainer.progress=false", "trainer.report=false",
                             "data.train_split=0.8", "data.cache=false"])
    cfg.data.hdf5_path = str(demo_file)
    return train(cfg, tmp_path_factory.mktemp("runs") / "demo_run").run_dir


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's torch work on one thread (bit-exact comparisons, less contention)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def demo_config(data_file, overrides):
    """The default config with ``overrides`` applied, reading ``data_file``."""
    from rollfit.config import load_config

    cfg = load_config(None, list(overrides))
    cfg.data.hdf5_path = str(data_file)
    return cfg
