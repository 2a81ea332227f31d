"""rollfit: fast, trustworthy regression surrogates from HDF5 simulation rollout files.

Public API (everything else is private and may change)::

    from rollfit import load_rollouts, load_config, train, Surrogate
    table = load_rollouts("rollout_data.h5", ["gait_cadence", "gait_stride"], ["cot_ma15"])
    result = train(load_config("config.yaml"), output="runs/first")
    s = Surrogate.load(result.run_dir); s.predict({"gait_cadence": [1.0], "gait_stride": [1.1]})

Names are imported lazily (PEP 562), so ``import rollfit`` and the CLI's ``--help`` stay
fast; torch is imported when a model name is first used.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # data
    "load_rollouts": "rollfit.data.reader",
    "RolloutTable": "rollfit.data.table",
    "HDF5Dataset": "rollfit.data.datamodule",
    "HDF5DataModule": "rollfit.data.datamodule",
    # model
    "ResidualMLP": "rollfit.model.network",
    "SequentialMLP": "rollfit.model.network",
    "RegressionNet": "rollfit.model.network",
    # training
    "Trainer": "rollfit.training.trainer",
    "SimpleLogger": "rollfit.training.logger",
    "train": "rollfit.pipeline.run",
    "RunFolder": "rollfit.runs.folder",
    # configuration
    "Config": "rollfit.config",
    "load_config": "rollfit.config",
    # use
    "Surrogate": "rollfit.analysis.surrogate",
    # errors
    "RollfitError": "rollfit.errors",
    "ConfigError": "rollfit.errors",
    "DataError": "rollfit.errors",
    "CheckpointError": "rollfit.errors",
    "TrainingError": "rollfit.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rollfit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return __all__
