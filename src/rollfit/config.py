"""The configuration schema: every key, its meaning, unit and default, in one typed place.

The YAML file has the seed's three sections (``data``, ``model``, ``trainer``). It is
validated strictly: an unknown key, a wrong type or an out-of-range value is a
``ConfigError`` naming the dotted key, with "did you mean" for typos. All problems are
reported at once. Command-line overrides use dotted keys (``trainer.max_epochs=200``).
This module imports no torch, so the CLI and the docs can read it cheaply.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, did_you_mean

ACTIVATIONS = ("gelu", "silu", "relu", "tanh")
RECON_TYPES = ("mse", "huber", "cauchy", "welsch", "geman", "tukey")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the rows come from and how they are split and read."""

    hdf5_path: Optional[Union[str, list[str]]] = Field(
        None, description="Rollout file(s), a directory or a glob; `--hdf5` overrides it. "
        "Relative paths are taken from the config file's folder.")
    in_lbl: list[str] = Field(
        ["gait_cadence", "gait_stride"], min_length=1,
        description="Input labels: names in the file's `parameter_names`, picked from `param_state`.")
    out_lbl: list[str] = Field(
        ["cot_ma15"], min_length=1,
        description="Output labels: param-level attribute names or aliases (cot_ma15 = metabolic/cot/MA/mean).")
    aliases: dict[str, str] = Field(
        {}, description="Extra output aliases, label -> attribute name (e.g. {speed: velocity}).")
    batch_size: int = Field(65536, gt=0, description="Rows per optimizer step; >= rows means full batch.")
    train_split: float = Field(
        1.0, gt=0.0, le=1.0,
        description="Fraction of param groups used for training; 1.0 trains and validates on all rows (the seed's default).")
    split_seed: int = Field(0, description="Seed of the random train/validation split of param groups.")
    on_missing: Literal["error", "skip"] = Field(
        "error", description="A successful group lacking an output or param_state: stop with an error, or skip the row.")
    on_nonfinite: Literal["error", "skip"] = Field(
        "error", description="A NaN or infinite input/output value: stop with an error, or skip the row.")
    cache: bool = Field(True, description="Cache the extracted table per file, so a second run starts at once.")
    cache_dir: Optional[str] = Field(
        None, description="Cache folder; default $ROLLFIT_CACHE_DIR, else $XDG_CACHE_HOME/rollfit or ~/.cache/rollfit.")
    workers: int = Field(0, ge=0, description="Reader processes; 0 picks min(cores, work).")


class ModelConfig(_Section):
    """The network: an MLP with normalization built in."""

    residual: bool = Field(True, description="Residual (skip-connected) layers; false gives the plain sequential MLP.")
    layers: list[int] = Field([64, 32], min_length=1, description="Hidden layer widths, first to last.")
    activation: Literal["gelu", "silu", "relu", "tanh"] = Field("gelu", description="Hidden activation.")

    @field_validator("layers")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if any(w <= 0 for w in v):
            raise ValueError(f"every width must be > 0, but got {v}")
        return v


class TrainerConfig(_Section):
    """Optimization, losses, schedule, checkpoints and logging."""

    max_epochs: int = Field(10002, ge=1, description="Number of epochs (passes over the training rows).")
    lr: float = Field(0.1, gt=0, description="Adam's initial learning rate.")
    min_lr: float = Field(0.0005, ge=0, description="ReduceLROnPlateau's floor for the learning rate.")
    lr_factor: float = Field(0.5, gt=0, lt=1, description="Factor applied to the lr on a plateau.")
    lr_patience: int = Field(100, ge=0, description="Epochs without relative improvement > lr_threshold before the lr drops.")
    lr_threshold: float = Field(1e-3, ge=0, description="Relative improvement of the validation loss that counts.")
    recon_type: Literal["mse", "huber", "cauchy", "welsch", "geman", "tukey"] = Field(
        "huber", description="Reconstruction loss on normalized targets.")
    recon_weight: float = Field(10.0, ge=0, description="Weight of the reconstruction loss.")
    recon_delta: float = Field(1.0, gt=0, description="Scale of the robust losses (huber delta; others scale it, see README).")
    recon_start_epoch: int = Field(
        0, ge=0, description="geman, welsch and tukey use huber before this epoch (warm start for non-convex losses).")
    l1_weight: float = Field(0.001, ge=0, description="Weight of L1 = sum over parameter tensors of mean |w|.")
    l2_weight: float = Field(0.001, ge=0, description="Weight of L2 = sum over parameter tensors of mean w^2.")
    grad_weight: float = Field(
        0.01, ge=0, description="Weight of the input-gradient penalty mean_b sum_j (d sum_k y_k / d x_j)^2 (see grad_space).")
    grad_space: Literal["normalized", "raw"] = Field(
        "normalized", description="Inputs the gradient penalty differentiates by: normalized (unit-free, rollfit's "
        "default) or raw (the original's definition; its strength then depends on the inputs' units).")
    log_period: int = Field(50, ge=1, description="Log metrics every N epochs (and at the last epoch).")
    save_period: int = Field(1000, ge=1, description="Write a checkpoint every N epochs (and at the last epoch).")
    checkpoint_every_minutes: Optional[float] = Field(
        None, gt=0, description="Also write a checkpoint when this many minutes passed since the last one.")
    keep_last: Optional[int] = Field(
        None, ge=1, description="Keep only the newest N periodic checkpoints (default: keep all, as the original).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: cuda when usable, except cpu for small jobs (<= 4096 rows) with an eager "
        "engine (docs/speed.md).")
    compile: Literal["auto", "off", "jacobian", "fused", "compile", "cudagraph"] = Field(
        "auto", description="Step engine: auto = cudagraph on CUDA, on CPU fused (compile for long runs on large "
        "data); fused = hand-derived one-pass step; compile = fused under torch.compile; cudagraph = whole "
        "epochs as one CUDA graph; jacobian = autograd with forward-Jacobian penalty; off = the plain "
        "double-backward step (docs/speed.md).")
    seed: int = Field(0, description="Seed of torch, numpy and python RNGs (weights init, shuffling).")
    deterministic: bool = Field(False, description="Ask torch for deterministic kernels (slower on GPU).")
    on_nonfinite: Literal["stop", "rollback"] = Field(
        "stop", description="A non-finite loss: stop, or restore the last good state and halve the lr (at most 3 times).")
    progress: bool = Field(True, description="Show a tqdm progress bar with loss and lr.")
    report: bool = Field(True, description="Write plots/ and report.html at the end of a run.")

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        """YAML reads a bare ``off`` as false; ``compile: off`` means the string."""
        return "off" if v is False else v


class Config(_Section):
    """A whole run configuration: the seed's three sections."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-safe), as written to ``config.yaml``."""
        return self.model_dump(mode="json")


SECTIONS: dict[str, type[_Section]] = {"data": DataConfig, "model": ModelConfig, "trainer": TrainerConfig}


def all_keys() -> list[str]:
    """Every dotted key of the schema, e.g. ``trainer.max_epochs``."""
    return [f"{s}.{k}" for s, cls in SECTIONS.items() for k in cls.model_fields]


def _describe_error(err: dict[str, Any], source: str) -> str:
    """One line for one pydantic error: the dotted key, expectation and what was found."""
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        section = SECTIONS.get(loc[0]) if len(loc) > 1 else None
        known = [f"{loc[0]}.{k}" for k in section.model_fields] if section else list(SECTIONS)
        if section is None:
            known += all_keys()
        return f"{source}: unknown key '{key}'{did_you_mean(key, known)}"
    got = err.get("input")
    msg = err["msg"].replace("Value error, ", "")
    return f"{source}: key '{key}': {msg}, but got {got!r}"


def validate(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a plain dict into a ``Config``; all problems in one ``ConfigError``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with sections data/model/trainer, but got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe_error(e, source) for e in exc.errors()]
        raise ConfigError("; ".join(lines)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: expected a YAML config file, but it does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: expected valid YAML, but parsing failed{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping with sections data/model/trainer, but got {type(raw).__name__}")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"trainer.max_epochs=200"`` -> (["trainer", "max_epochs"], 200); the value is YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected section.key=value, but got no '='")
    key, _, value = text.partition("=")
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override '{text}': expected section.key=value with one dot, but got key '{key}'"
                          f"{did_you_mean(key.strip(), all_keys())}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with dotted ``key=value`` overrides applied (validated later)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in SECTIONS:
            raise ConfigError(f"override '{text}': unknown section '{section}'{did_you_mean(section, SECTIONS)}")
        if key not in SECTIONS[section].model_fields:
            known = [f"{section}.{k}" for k in SECTIONS[section].model_fields]
            raise ConfigError(f"override '{text}': unknown key '{section}.{key}'{did_you_mean(f'{section}.{key}', known)}")
        out.setdefault(section, {})[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides, validate.

    A relative ``data.hdf5_path`` in the file is resolved against the file's folder, so a
    config travels with its data.
    """
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    cfg = validate(raw, source=str(path) if path is not None else "config")
    if path is not None and cfg.data.hdf5_path is not None:
        base = Path(path).resolve().parent
        cfg.data.hdf5_path = _resolve_paths(cfg.data.hdf5_path, base)
    return cfg


def _resolve_paths(value: str | list[str], base: Path) -> str | list[str]:
    def one(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else base / q)

    return [one(p) for p in value] if isinstance(value, list) else one(value)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``config.yaml`` atomically, in the seed's section order."""
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def reference_table() -> str:
    """The config reference as a Markdown table (key, default, meaning), for the README."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for section, cls in SECTIONS.items():
        for name, field in cls.model_fields.items():
            default = field.default if field.default_factory is None else field.default_factory()
            text = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{section}.{name}` | `{json.dumps(default)}` | {text} |")
    return "\n".join(rows)
