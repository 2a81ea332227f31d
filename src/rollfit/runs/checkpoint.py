"""Checkpoints: the original pipeline's dict format plus what a checkpoint needs to stand alone.

A checkpoint is ``{"epoch", "model_state_dict", "optimizer_state_dict",
"scheduler_state_dict", "config"}`` as in the original pipeline; ``config`` holds the keys its
loading snippet reads (``input_dim`` ... ``target_std``) and rollfit's additions
(``format_version``, ``target_convention``, ``activation``, labels, aliases, input
bounds, loss settings and the whole run config). ``model_state_dict`` holds the weights with
the target scaling folded into the output layer (``target_convention: raw``), so the original's
``model(x)`` gives original units; ``trainer_state.net_state_dict`` holds the weights as
trained, which resume continues from bit for bit. Only plain types and tensors are stored,
so ``torch.load(path, weights_only=True)`` reads it. Files are written atomically.

Runs of the original pipeline have no ``format_version``: their networks output raw units
(``target_convention = "raw"``) and their activation and labels live in the run folder's
``config.yaml``.

Which checkpoint a run folder means: for use (``load_model``, hence ``Surrogate.load`` and
every command) a file named explicitly, else ``checkpoints/best.ckpt`` (the lowest validation
loss; the only checkpoint of kinds fitted in one go), else the newest ``ep_*.ckpt``; a damaged
one is skipped with a warning. ``--resume`` continues from the newest ``ep_*.ckpt`` (the
training state), never from ``best.ckpt``, which holds the weights and config only (its
``net_state_dict``/``net_convention``, beside ``model_state_dict``, are the weights as
trained, which ``--init-from`` fine-tunes from, as ``trainer_state``'s are for an epoch).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..config import ACTIVATIONS, read_yaml_file
from ..ckpt_schema import found, validate_checkpoint
from ..errors import CheckpointError, ConfigError, DataFileNotFound, did_you_mean
from ..io import atomic_write_bytes
from ..model.kinds import kind_of, kind_spec, kinds_with
from ..model.network import RegressionNet
from .folder import BEST_FILE, CKPT_DIR, RunFolder, best_checkpoint, list_checkpoints

FORMAT_VERSION = 1
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


def resolve_checkpoint(run_or_ckpt: str | Path | RunFolder) -> Path:
    """The checkpoint a run means (nothing read): a file as given, else the run's
    ``best.ckpt`` when it exists, else its newest ``ep_*.ckpt``."""
    folder = run_or_ckpt if isinstance(run_or_ckpt, RunFolder) else RunFolder.at(run_or_ckpt)
    if folder.checkpoint is not None:
        return folder.checkpoint
    return folder.best if folder.best.is_file() else folder.list_checkpoints()[-1]


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
    validate_checkpoint(ckpt, p)
    _check_best_weights(ckpt, p)
    missing = [k for k in ("model_state_dict", "config") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{p}: expected a checkpoint dict with {', '.join(missing)}, but they are missing")
    absent = [k for k in SEED_KEYS if k not in ckpt["config"]]
    if absent:
        raise CheckpointError(f"{p}: config: expected keys {', '.join(absent)}, but they are missing")
    return ckpt


def _check_best_weights(ckpt: Any, path: Path) -> None:
    """best.ckpt's training weights (top-level ``net_state_dict``, ``net_convention``), when present."""
    if not isinstance(ckpt, dict):
        return
    net = ckpt.get("net_state_dict", {})
    if not isinstance(net, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in net.items()):
        raise CheckpointError(f"{path}: net_state_dict: expected a dict of weight tensors, but got {found(net)}")
    convention = ckpt.get("net_convention", "normalized")
    if convention not in ("normalized", "raw"):
        raise CheckpointError(f"{path}: net_convention: expected 'normalized' or 'raw', but got {found(convention)}")


def run_yaml_path(ckpt_path: str | Path) -> Path:
    """Where a checkpoint's run config lives.

    ``<run>/config.yaml`` for ``<run>/checkpoints/ep_*.ckpt`` (the original's layout);
    for a checkpoint kept elsewhere, ``config.yaml`` beside it (never an unrelated file two
    levels up).
    """
    p = Path(ckpt_path).resolve()
    return (p.parent.parent if p.parent.name == CKPT_DIR else p.parent) / "config.yaml"


def read_run_yaml(run_dir: str | Path) -> Optional[dict[str, Any]]:
    """The run folder's ``config.yaml`` as a dict, or None when the folder has none.

    A file that exists but is not a YAML mapping is an error: a damaged config must not
    silently turn into defaults (placeholder labels, a guessed activation).
    """
    p = Path(run_dir) / "config.yaml"
    if not p.is_file():
        return None
    try:  # the same bounded loader as --config: a received run's file is untrusted too
        data = read_yaml_file(p, "the run's YAML config")
    except ConfigError as exc:
        problem = str(exc).removeprefix(f"{p}: ")
        raise CheckpointError(f"{p}: expected the run's YAML config, but it could not be parsed ({problem})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{p}: expected a YAML mapping with data/model/trainer sections, "
                              f"but got {type(data).__name__}")
    return data


def is_original(ckpt: dict[str, Any]) -> bool:
    """True for checkpoints written by the original pipeline: rollfit's always carry ``format_version``."""
    cfg = ckpt.get("config")
    return isinstance(cfg, dict) and "format_version" not in cfg


def model_config(ckpt: dict[str, Any], ckpt_path: str | Path, activation: Optional[str] = None) -> dict[str, Any]:
    """The checkpoint's ``config``, completed so that ``build_model`` rebuilds the exact network.

    rollfit checkpoints are complete already. Original ones get ``activation``, ``in_lbl``,
    ``out_lbl`` from the run's ``config.yaml`` (``run_yaml_path``), ``target_convention =
    "raw"`` (their networks output original units) and ``run_config``. ``activation`` (the
    ``--activation`` flag) supplies the activation when no config records it; it must agree
    with a recorded one. A value that cannot be found is an error naming the flag.
    """
    if activation is not None and activation not in ACTIVATIONS:
        raise CheckpointError(f"--activation: expected one of {', '.join(ACTIVATIONS)}, but got '{activation}'"
                              f"{did_you_mean(str(activation), ACTIVATIONS)}")
    cfg = dict(ckpt["config"])
    if not is_original(ckpt):
        return _rollfit_config(cfg, ckpt_path, activation)
    yaml_path = run_yaml_path(ckpt_path)
    run_yaml = read_run_yaml(yaml_path.parent)
    model_sec, data_sec = _section(run_yaml, "model", yaml_path), _section(run_yaml, "data", yaml_path)
    _check_architecture(cfg, model_sec, yaml_path)
    cfg["activation"] = _original_activation(model_sec.get("activation"), activation, ckpt_path, yaml_path,
                                             run_yaml is not None)
    cfg["in_lbl"] = _original_labels(data_sec.get("in_lbl"), cfg["input_dim"], "data.in_lbl", "x", yaml_path)
    cfg["out_lbl"] = _original_labels(data_sec.get("out_lbl"), cfg["output_dim"], "data.out_lbl", "y", yaml_path)
    cfg["target_convention"] = "raw"
    cfg["run_config"] = run_yaml or {}
    return cfg


def _rollfit_config(cfg: dict[str, Any], ckpt_path: str | Path, activation: Optional[str]) -> dict[str, Any]:
    """A rollfit checkpoint's config, checked: known format version, convention declared."""
    if cfg["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{ckpt_path}: expected format_version <= {FORMAT_VERSION}, but got "
                              f"{cfg['format_version']}; upgrade rollfit")
    missing = [k for k in ("target_convention", "activation", "in_lbl", "out_lbl") if k not in cfg]
    if missing:
        raise CheckpointError(f"{ckpt_path}: config: expected keys {', '.join(missing)}, but they are missing")
    if activation is not None and activation != cfg["activation"]:
        raise CheckpointError(f"--activation: expected '{cfg['activation']}' as recorded in {ckpt_path}, "
                              f"but got '{activation}'; drop the flag")
    return cfg


def _section(run_yaml: Optional[dict[str, Any]], name: str, yaml_path: Path) -> dict[str, Any]:
    """One section (``model``, ``data``) of a run config; {} when there is no config."""
    sec = (run_yaml or {}).get(name) or {}
    if not isinstance(sec, dict):
        raise CheckpointError(f"{yaml_path}: {name}: expected a mapping, but got {type(sec).__name__}")
    return sec


def _check_architecture(cfg: dict[str, Any], model_sec: dict[str, Any], yaml_path: Path) -> None:
    """A config.yaml whose layers/residual contradict the checkpoint belongs to another run."""
    for key in ("layers", "residual"):
        if key in model_sec and model_sec[key] != cfg[key]:
            raise CheckpointError(f"{yaml_path}: model.{key}: expected {cfg[key]!r} as in the checkpoint, but got "
                                  f"{model_sec[key]!r}; this config.yaml belongs to another run")


def _original_activation(recorded: Any, flag: Optional[str], ckpt_path: str | Path, yaml_path: Path,
                         has_yaml: bool) -> str:
    """The activation an original network was trained with.

    The original mapped unknown names to gelu without a word; the same is done here, with
    a warning, because that is what its network computed.
    """
    if recorded is None:
        if flag is None:
            why = "it has no model.activation" if has_yaml else "the file is missing"
            raise CheckpointError(f"{ckpt_path}: expected the activation in {yaml_path} (original checkpoints do "
                                  f"not store it), but {why}; pass --activation NAME (one of "
                                  f"{', '.join(ACTIVATIONS)})")
        return flag
    if not isinstance(recorded, str):
        raise CheckpointError(f"{yaml_path}: model.activation: expected a name, but got {recorded!r}")
    effective = recorded if recorded in ACTIVATIONS else "gelu"
    if effective != recorded:
        warnings.warn(f"{yaml_path}: model.activation '{recorded}' is not one of {', '.join(ACTIVATIONS)}; "
                      f"the original pipeline trained it as gelu, so gelu is used", UserWarning, stacklevel=3)
    if flag is not None and flag != effective:
        raise CheckpointError(f"--activation: expected '{effective}' as recorded in {yaml_path}, but got "
                              f"'{flag}'; drop the flag")
    return effective


def _original_labels(labels: Any, n: int, key: str, prefix: str, yaml_path: Path) -> list[str]:
    """Labels from the run config, checked against the network's width; placeholders with a
    warning when the run config has none (predictions stay right, names are unknown)."""
    if labels is None:
        placeholder = [f"{prefix}{i}" for i in range(n)]
        warnings.warn(f"{yaml_path}: no {key} (file missing or key absent); using placeholder labels "
                      f"{', '.join(placeholder)}", UserWarning, stacklevel=3)
        return placeholder
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or len(labels) != n:
        raise CheckpointError(f"{yaml_path}: {key}: expected {n} label(s) as the checkpoint's network has, "
                              f"but got {labels!r}")
    return list(labels)


def build_model(cfg: dict[str, Any]) -> RegressionNet:
    """A ``RegressionNet`` from a checkpoint's (completed) config, weights not yet loaded.

    ``cfg`` must come from ``model_config``: a raw original config has no ``activation`` or
    ``target_convention``, and guessing them would bring back the double denormalization.
    """
    missing = [k for k in ("activation", "target_convention") if k not in cfg]
    if missing:
        raise CheckpointError(f"config: expected {' and '.join(missing)} (complete the checkpoint's config "
                              f"with model_config), but {'it is' if len(missing) == 1 else 'they are'} missing")
    return kind_spec(kind_of(cfg)).build(cfg)


def newest_readable(folder: RunFolder) -> tuple[Path, dict[str, Any]]:
    """(path, checkpoint) to use: the file the user named, else the run's ``best.ckpt``,
    else its newest readable ``ep_*.ckpt``.

    A damaged best or newest checkpoint (a disk fault, a kill during a copy) is skipped with
    a warning naming it, as ``--resume`` does; a file named explicitly must be readable.
    """
    if folder.checkpoint is not None:
        return folder.checkpoint, load_checkpoint(folder.checkpoint)
    ckpts = folder.list_checkpoints()
    if folder.best.is_file():
        try:
            return folder.best, load_checkpoint(folder.best)
        except CheckpointError as exc:
            if not ckpts:
                raise
            warnings.warn(f"{exc}; using the newest {CKPT_DIR}/ep_*.ckpt instead", UserWarning, stacklevel=3)
    for path in reversed(ckpts[1:]):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; using the next older checkpoint", UserWarning, stacklevel=3)
    return ckpts[0], load_checkpoint(ckpts[0])


def load_model(run_or_ckpt: str | Path | RunFolder, activation: Optional[str] = None,
               training: bool = False) -> tuple[RegressionNet, dict[str, Any], Path]:
    """(model in eval mode, completed config, checkpoint path) for a run folder or checkpoint.

    Works for rollfit's and the original pipeline's checkpoints alike (see ``model_config``);
    the weights must match the rebuilt network exactly (strict loading). ``training``: the
    network as it was trained (``training_model``), to go on training it.
    """
    folder = run_or_ckpt if isinstance(run_or_ckpt, RunFolder) else RunFolder.at(run_or_ckpt)
    path, ckpt = newest_readable(folder)
    cfg = model_config(ckpt, path, activation)
    if training:
        return training_model(ckpt, path, cfg=cfg).eval(), cfg, path
    model = build_model(cfg)
    load_weights(model, ckpt["model_state_dict"], path)
    return model.eval(), cfg, path


def _net_part(state: dict[str, Any]) -> dict[str, Any]:
    """Where a checkpoint keeps its weights as trained: ``trainer_state`` (an epoch's), the
    top level (best.ckpt's), or nowhere ({})."""
    ts = state.get("trainer_state")
    if isinstance(ts, dict) and "net_state_dict" in ts:
        return ts
    return state if "net_state_dict" in state else {}


def training_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The weights training goes on from: ``net_state_dict`` where a checkpoint has it (in
    ``trainer_state``, or at the top level of best.ckpt; its ``model_state_dict`` holds the
    weights folded into original units), else ``model_state_dict`` (in-memory snapshots,
    checkpoints of rollfit 0.1 and the original's)."""
    return _net_part(state).get("net_state_dict", state["model_state_dict"])


def training_model(ckpt: dict[str, Any], path: str | Path, activation: Optional[str] = None,
                   cfg: Optional[dict[str, Any]] = None) -> RegressionNet:
    """The network in the target convention it is trained in, with its exact training weights
    (resume and fine-tuning continue from these, bit for bit). ``cfg``: the checkpoint's
    ``model_config`` when the caller has it already."""
    cfg = cfg if cfg is not None else model_config(ckpt, path, activation)
    net = _net_part(ckpt)
    if net:
        cfg = {**cfg, "target_convention": str(net.get("net_convention", "normalized"))}
    model = build_model(cfg)
    load_weights(model, training_weights(ckpt), path)
    return model


_WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DataParallel/DDP wrappers


def load_weights(model: RegressionNet, state: dict[str, Any], path: str | Path) -> None:
    """Load a state_dict strictly, naming missing, unexpected or misshapen entries in one line.

    Prefixes added by ``torch.compile`` (``_orig_mod.``) or DDP (``module.``) are removed first.
    """
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = [f"{what} {_few(items)}" for what, items in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatch (checkpoint vs network)", shapes))
                if items]
    if problems:
        raise CheckpointError(f"{path}: expected weights of {_shape_text(model)}, but got {'; '.join(problems)}"
                              f"{_layout_hint(model, unexpected)}")
    try:
        model.load_state_dict(state, strict=True)
    except CheckpointError as exc:  # a kind's own check of the values (model/gp.py: std_scale)
        raise CheckpointError(f"{path}: {exc}") from None


def _shape_text(model: nn.Module) -> str:
    """What the rebuilt model is: a network's layers, or a kind without layers (a GP) by name."""
    if hasattr(model, "layers") and hasattr(model, "residual"):
        return f"layers={model.layers} residual={model.residual}"
    return f"model.kind {getattr(model, 'kind', type(model).__name__)}"


def _layout_hint(model: nn.Module, unexpected: list[str]) -> str:
    """A network's weights of the other layout (sequential vs residual), said so."""
    if not hasattr(model, "residual"):
        return ""
    if model.residual and any(k.startswith("mlp.mlp.") for k in unexpected):
        return "; the weights have the sequential layout (mlp.mlp.*), not the residual one"
    if not model.residual and any(k.startswith("mlp.input_layer.") for k in unexpected):
        return "; the weights have the residual layout (mlp.input_layer ...)"
    return ""


def _few(items: list[str], n: int = 3) -> str:
    shown = ", ".join(f"'{i}'" for i in items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


RESUME_KEYS = ("epoch", "optimizer_state_dict", "scheduler_state_dict", "trainer_state")


def _check_resumable(ckpt: dict[str, Any], path: Path) -> None:
    """A checkpoint to resume from must carry the training state, not only the weights."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing and path.name == BEST_FILE:
        raise CheckpointError(f"{path}: expected a training checkpoint ({CKPT_DIR}/ep_*.ckpt) to resume from, but "
                              f"{BEST_FILE} holds only the weights of the best epoch; resume the run folder "
                              f"(its newest ep_*.ckpt), or fine-tune from {BEST_FILE} with --init-from")
    if missing:
        raise CheckpointError(f"{path}: expected a rollfit training checkpoint with {', '.join(missing)}, but "
                              f"{'it is' if len(missing) == 1 else 'they are'} missing; use --init-from to "
                              f"fine-tune from its weights instead")


def find_resume_checkpoint(run_or_ckpt: str | Path) -> tuple[Path, dict[str, Any]]:
    """(path, checkpoint) to resume from: the file as given, or a run's newest complete one.

    In a run folder, checkpoints that cannot be read (e.g. damaged by a disk fault) are
    skipped in favour of the next older one; a file given explicitly must be readable.
    """
    p = Path(run_or_ckpt)
    if p.is_file():
        ckpt = load_checkpoint(p)
        _check_resumable(ckpt, p)
        return p, ckpt
    if not p.exists():
        raise DataFileNotFound(f"{p}: expected a run folder or a checkpoint file to resume, but it does not exist")
    skipped: list[str] = []
    for path in reversed(list_checkpoints(p)):
        try:
            ckpt = load_checkpoint(path)
            _check_resumable(ckpt, path)
            return path, ckpt
        except CheckpointError as exc:
            skipped.append(f"{path.name} ({str(exc).split(': ', 1)[-1]})")
    if not skipped and best_checkpoint(p).is_file():
        _refuse_fitted_once(best_checkpoint(p))
    found = f"skipped {'; '.join(skipped)}" if skipped else "found no checkpoint"
    raise CheckpointError(f"{p}: expected a complete checkpoint in {CKPT_DIR}/ to resume from, but {found}")


def _refuse_fitted_once(best: Path) -> None:
    """A folder with only ``best.ckpt``: a kind fitted in one go (a GP) has nothing to resume;
    an epoch-trained run without ``ep_*.ckpt`` falls through to the caller's error."""
    try:
        kind = kind_of(load_checkpoint(best)["config"])
        resumable = kind_spec(kind).resumable
    except CheckpointError:
        return
    if not resumable:
        raise CheckpointError(f"{best.parent.parent}: expected a run of a kind that trains in epochs "
                              f"({', '.join(kinds_with('resumable'))}) to resume, but this run is '{kind}', which "
                              f"is fitted in one go ({CKPT_DIR}/{BEST_FILE} only); train it again instead")
