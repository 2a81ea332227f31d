"""Checkpoints: the seed's dict format plus what a checkpoint needs to stand alone.

A checkpoint is ``{"epoch", "model_state_dict", "optimizer_state_dict",
"scheduler_state_dict", "config"}`` as in the seed; ``config`` holds the keys the seed's
loading snippet reads (``input_dim`` ... ``target_std``) and rollfit's additions
(``format_version``, ``target_convention``, ``activation``, labels, aliases, input
bounds, loss settings and the whole run config). Only plain types and tensors are stored,
so ``torch.load(path, weights_only=True)`` reads it. Files are written atomically.

Runs of the original pipeline have no ``format_version``: their networks output raw units
(``target_convention = "raw"``) and their activation and labels live in the run folder's
``config.yaml``.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from ..errors import CheckpointError, DataFileNotFound
from ..io import atomic_write_bytes
from ..model.network import RegressionNet

FORMAT_VERSION = 1
CKPT_DIR = "checkpoints"
_EPOCH_RE = re.compile(r"ep_(\d+)\.ckpt$")
SEED_KEYS = ("input_dim", "output_dim", "layers", "residual", "input_mean", "input_std", "target_mean", "target_std")


def checkpoint_name(epoch: int) -> str:
    """``ep_NNNNNN.ckpt`` as the original names them."""
    return f"ep_{epoch:06d}.ckpt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Serialize ``state`` in memory, then write it atomically (never a partial file)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's ``checkpoints/ep_*.ckpt`` files, oldest epoch first."""
    found = [(int(m.group(1)), p) for p in (Path(run_dir) / CKPT_DIR).glob("ep_*.ckpt")
             if (m := _EPOCH_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(run_or_ckpt: str | Path) -> Path:
    """A checkpoint file as given, or the newest checkpoint of a run folder."""
    p = Path(run_or_ckpt)
    if p.is_file():
        return p
    if not p.exists():
        raise DataFileNotFound(f"{p}: expected a run folder or a checkpoint file, but it does not exist")
    ckpts = list_checkpoints(p)
    if not ckpts:
        raise CheckpointError(f"{p}: expected a run folder with {CKPT_DIR}/ep_*.ckpt, but found no checkpoint")
    return ckpts[-1]


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint (two levels up, as the original lays them out)."""
    return Path(ckpt_path).resolve().parent.parent


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; one-line errors for bad files."""
    p = Path(path)
    if not p.is_file():
        raise DataFileNotFound(f"{p}: expected a checkpoint file, but it does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{p}: expected a torch checkpoint, but it could not be read "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    missing = [k for k in ("model_state_dict", "config") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{p}: expected a checkpoint dict with {', '.join(missing)}, but they are missing")
    absent = [k for k in SEED_KEYS if k not in ckpt["config"]]
    if absent:
        raise CheckpointError(f"{p}: config: expected keys {', '.join(absent)}, but they are missing")
    return ckpt


def read_run_yaml(run_dir: str | Path) -> Optional[dict[str, Any]]:
    """The run folder's ``config.yaml`` as a dict, or None when absent or unreadable."""
    p = Path(run_dir) / "config.yaml"
    if not p.is_file():
        return None
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def is_original(ckpt: dict[str, Any]) -> bool:
    """True for checkpoints written by the original pipeline (no format version)."""
    return "format_version" not in ckpt["config"]


def model_config(ckpt: dict[str, Any], ckpt_path: str | Path, activation: Optional[str] = None) -> dict[str, Any]:
    """The checkpoint's ``config``, completed from the run's ``config.yaml`` for original runs.

    Fills ``activation``, ``in_lbl``, ``out_lbl`` and ``target_convention``; a value that
    cannot be found is an error that names the flag supplying it.
    """
    cfg = dict(ckpt["config"])
    if not is_original(ckpt):
        if cfg.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{ckpt_path}: expected format_version <= {FORMAT_VERSION}, but got "
                                  f"{cfg['format_version']}; upgrade rollfit")
        return cfg
    run_yaml = read_run_yaml(run_dir_of(ckpt_path)) or {}
    model_sec, data_sec = run_yaml.get("model") or {}, run_yaml.get("data") or {}
    cfg["target_convention"] = "raw"
    cfg["activation"] = activation or model_sec.get("activation")
    if not cfg["activation"]:
        raise CheckpointError(f"{ckpt_path}: expected the activation in the checkpoint or in "
                              f"{run_dir_of(ckpt_path) / 'config.yaml'}, but neither has it; pass --activation NAME")
    cfg.setdefault("in_lbl", data_sec.get("in_lbl") or [f"x{i}" for i in range(cfg["input_dim"])])
    cfg.setdefault("out_lbl", data_sec.get("out_lbl") or [f"y{k}" for k in range(cfg["output_dim"])])
    cfg.setdefault("run_config", run_yaml)
    return cfg


def build_model(cfg: dict[str, Any]) -> RegressionNet:
    """A ``RegressionNet`` from a checkpoint's (completed) config, weights not yet loaded."""
    return RegressionNet(
        input_dim=cfg["input_dim"], output_dim=cfg["output_dim"], layers=cfg["layers"],
        input_mean=torch.tensor(cfg["input_mean"]), input_std=torch.tensor(cfg["input_std"]),
        target_mean=torch.tensor(cfg["target_mean"]), target_std=torch.tensor(cfg["target_std"]),
        residual=cfg["residual"], activation=cfg.get("activation", "gelu"),
        target_convention=cfg.get("target_convention", "normalized"))


def load_model(run_or_ckpt: str | Path, activation: Optional[str] = None) -> tuple[RegressionNet, dict[str, Any], Path]:
    """(model in eval mode, completed config, checkpoint path) for a run folder or checkpoint."""
    path = resolve_checkpoint(run_or_ckpt)
    ckpt = load_checkpoint(path)
    cfg = model_config(ckpt, path, activation)
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model_state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{path}: expected weights matching layers={cfg['layers']} "
                              f"residual={cfg['residual']}, but loading failed: {first}") from None
    return model.eval(), cfg, path
