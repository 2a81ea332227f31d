"""The configuration schema: every key, its meaning, unit and default, in one typed place.

The YAML file has the original pipeline's three sections (``data``, ``model``, ``trainer``). It is
validated strictly: an unknown key, a wrong type or an out-of-range value is a
``ConfigError`` naming the dotted key, with "did you mean" for typos. All problems are
reported at once. Command-line overrides use dotted keys (``trainer.max_epochs=200``).
This module imports no torch, so the CLI and the docs can read it cheaply.
"""
from __future__ import annotations

import json
import os
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, Strict, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from .errors import ConfigError, did_you_mean
from .model import registry

ACTIVATIONS = tuple(registry.ACTIVATIONS)  # the registries' names at import (model/registry.py)
RECON_TYPES = tuple(registry.LOSSES)
ENGINES = ("auto", "eager", "compiled", "captured", "reference")
OLD_ENGINES = {"off": "reference", "jacobian": "eager", "fused": "eager", "compile": "compiled",
               "cudagraph": "captured", False: "reference"}  # trainer.compile (YAML reads a bare off as false)
OLD_KEYS = ("trainer.compile",)  # still read (renamed trainer.engine)
FIT_KINDS = ("mlp", "ensemble", "gp", "robust_gp")  # model kinds that fit directly (model/kinds.py)
MODEL_KINDS = (*FIT_KINDS, "auto")                  # auto: cross-validation picks one of FIT_KINDS
# Exact GP limit (training rows), set by time, not memory (benchmarks/RESULTS.md, "Gaussian
# processes"): one likelihood+gradient evaluation costs 0.34 / 2.1 / 6.7 / 26 CPU s at
# 1000 / 2000 / 3000 / 5000 rows (13 inputs, peak 0.5 / 1.1 / 1.2 / 2.9 GB) and a start takes
# ~150 of them (1000 rows: 73 L-BFGS steps, 50 CPU s; 2000 rows: 69 steps, 272 CPU s), so 2000 rows is
# ~5 min per start on one core while 3000 is ~17 min, and auto's cross-validation repeats the
# fit per fold.
GP_MAX_ROWS = 2000


# Limits of what a config (or sweep space) file may make rollfit do before validation.
MAX_CONFIG_BYTES = 1 << 20          # a config is a few hundred bytes; 1 MiB is generous
MAX_YAML_NODES = 100_000            # nodes after alias expansion (a "billion laughs" file has 1e9)
MAX_YAML_DEPTH = 50                 # nesting of lists/mappings
MAX_SEED = 2**32 - 1                # numpy's legacy seeding takes 32-bit seeds
MAX_MODEL_BYTES = 32 << 30          # estimated training memory of the network (see model_memory)
ESTIMATE_ROWS = 1 << 20             # batch rows model_memory counts at most


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, v: Any, info: ValidationInfo) -> Any:
        """No silent coercion: ``true`` is not 1, ``2.5``/``"3"`` is not an int, ``1`` is not true."""
        if info.field_name is None:
            return v
        kinds = _scalar_kinds(cls.model_fields[info.field_name].annotation)
        items = v if isinstance(v, list) and "list" in kinds else [v]
        for item in items:
            _check_scalar(item, kinds)
        return v


def _scalar_kinds(annotation: Any) -> set[str]:
    """Which of int/bool/float/list a field's annotation allows (through Optional/Union/list)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is int:
        return {"int"}
    if annotation is bool:
        return {"bool"}
    if annotation is float:
        return {"float"}
    if origin is list:
        return {"list"} | _scalar_kinds(args[0] if args else Any)
    if origin is Union:
        return set().union(*(_scalar_kinds(a) for a in args))
    return set()


def _check_scalar(v: Any, kinds: set[str]) -> None:
    """Raise ValueError (one pydantic error line) when ``v`` would be coerced across kinds."""
    if "bool" in kinds and not isinstance(v, bool) and isinstance(v, (int, float)):
        raise ValueError("expected true or false")
    if isinstance(v, bool) and ("int" in kinds or "float" in kinds) and "bool" not in kinds:
        raise ValueError("expected a number" if "float" in kinds else "expected an integer")
    if "int" in kinds and "float" not in kinds and isinstance(v, (float, str)):
        raise ValueError("expected an integer")
    if "bool" in kinds and isinstance(v, str):
        raise ValueError("expected true or false")


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
        description="Fraction of param groups used for training; 1.0 trains and validates on all rows (the original pipeline's default).")
    split_seed: int = Field(0, ge=0, le=MAX_SEED,
                            description="Seed of the random train/validation split of param groups.")
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
    activation: Literal[ACTIVATIONS] = Field("gelu", description="Hidden activation.")
    kind: Literal[MODEL_KINDS] = Field(
        "mlp", description="Model kind: mlp (one network, the original's), ensemble (model.members networks "
        "trained together; mean and std), gp (exact Gaussian process, BoTorch), robust_gp (a GP that finds and "
        "down-weights gross outliers), auto (cross-validation picks among model.auto_candidates); "
        "README, Choosing a model.")
    members: int = Field(8, ge=2, le=64, description="ensemble: number of networks, trained together as one batched network.")
    bootstrap: bool = Field(
        True, description="ensemble: each member trains on its own bootstrap resample of the rows; without held-out "
        "rows (data.train_split 1.0) the rows a member did not draw calibrate the std (false: all members see every "
        "row, and the std is calibrated on the validation rows, or on the training rows, which under-covers).")
    gp_max_rows: int = Field(
        GP_MAX_ROWS, ge=2, description="gp, robust_gp: most training rows an exact GP is fitted to (its memory and "
        "time grow as rows^2 and rows^3); auto skips GPs above it with a note, gp refuses.")
    auto_candidates: list[Literal[FIT_KINDS]] = Field(
        ["gp", "robust_gp", "ensemble"], min_length=1,
        description="auto: the kinds cross-validation compares (ensemble with the trainer's robust loss).")
    auto_folds: int = Field(5, ge=2, le=20, description="auto: folds of the cross-validation (of param groups).")

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
    recon_type: Literal[RECON_TYPES] = Field(
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
        "engine (docs/guide.md, Training).")
    engine: Literal[ENGINES] = Field(
        "auto", description="Training engine: eager = the hand-derived fused step; compiled = it under "
        "torch.compile; captured = whole epochs as one CUDA graph (CUDA only, opt-in); reference = autograd with "
        "the double-backward penalty; auto = compiled on CPU for long runs on large data, else eager "
        "(docs/guide.md, Training). The old key trainer.compile is still read.")
    threads: Union[Literal["auto"], Annotated[int, Strict()]] = Field(
        "auto", description="CPU threads per step: auto = one for small steps, else the faster of torch's "
        "setting and one, timed while training (torch's setting with deterministic or on resume).")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of torch, numpy and python RNGs (weights init, shuffling).")
    deterministic: bool = Field(False, description="Ask torch for deterministic kernels (slower on GPU).")
    on_nonfinite: Literal["stop", "rollback"] = Field(
        "stop", description="A non-finite loss: stop, or restore the last good state and halve the lr (at most 3 times).")
    keep_best: bool = Field(
        True, description="Keep the weights of the lowest validation loss in checkpoints/best.ckpt, the model "
        "Surrogate.load and every command use when it exists.")
    early_stop_patience: int = Field(
        0, ge=0, description="Stop when the validation loss has not improved (by lr_threshold, relative) for this "
        "many epochs; 0 trains all max_epochs.")
    progress: bool = Field(True, description="Show a tqdm progress bar with loss and lr.")
    report: bool = Field(True, description="Write plots/ and report.html at the end of a run.")

    @model_validator(mode="before")
    @classmethod
    def _old_engine_names(cls, data: Any) -> Any:
        """Read the old ``compile`` key and values (off, jacobian, fused, compile, cudagraph) as
        ``engine``, with a one-line deprecation note."""
        if not isinstance(data, dict) or ("compile" not in data and data.get("engine", "auto") in ENGINES):
            return data
        data = dict(data)
        key = "compile" if "compile" in data else "engine"
        if key == "compile" and "engine" in data:
            raise ValueError("expected trainer.engine or its old name trainer.compile, not both")
        old = data.pop(key)
        new = OLD_ENGINES.get(old, old) if isinstance(old, (str, bool)) else old
        if new in ENGINES:
            shown = "off" if old is False else old
            warnings.warn(f"trainer.{key}: '{shown}' is now trainer.engine: '{new}'", FutureWarning, stacklevel=2)
        data["engine"] = new
        return data

    @field_validator("threads", mode="before")
    @classmethod
    def _auto_or_count(cls, v: Any) -> Any:
        """One error line for anything but ``auto`` or a positive integer (not ``true``, ``2.5``)."""
        if v != "auto" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError("expected 'auto' or an integer >= 1")
        return v


class Config(_Section):
    """A whole run configuration: the original pipeline's three sections."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-safe), as written to ``config.yaml``."""
        return self.model_dump(mode="json")

    @model_validator(mode="after")
    def _fits_in_memory(self) -> "Config":
        """Refuse a network whose estimated training memory is above ``MAX_MODEL_BYTES``."""
        check_model_size(self.model.layers, len(self.data.in_lbl), len(self.data.out_lbl), self.data.batch_size)
        return self


def model_memory(layers: list[int], n_in: int, n_out: int, batch_size: int) -> tuple[int, int]:
    """(parameters, estimated training bytes) of an MLP, before anything is allocated.

    Bytes: 16 per parameter (float32 weights, gradients and Adam's two moments) plus, per
    row of a batch, 4 bytes per hidden unit for each of ~6 passes (forward, backward and the
    gradient penalty's extra passes keep activations alive). Rows counted: ``batch_size``, at
    most ``ESTIMATE_ROWS`` (a huge batch_size is a way to say "full batch"; the rows are not
    known yet), so an over-estimate when the data has fewer rows.
    """
    widths = [n_in, *layers, n_out]
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    return params, 16 * params + 6 * 4 * min(batch_size, ESTIMATE_ROWS) * sum(layers)


def check_model_size(layers: list[int], n_in: int, n_out: int, batch_size: int, where: str = "model.layers") -> None:
    """ValueError (a ConfigError under ``validate``) when ``model_memory`` is above the limit."""
    params, need = model_memory(layers, n_in, n_out, batch_size)
    if need > MAX_MODEL_BYTES:
        raise ValueError(f"{where}: expected a network whose estimated training memory is at most "
                         f"{MAX_MODEL_BYTES >> 30} GiB, but got {layers}: {params:.3g} parameters, about "
                         f"{need / 2**30:.3g} GiB with batch_size {batch_size}; use narrower layers or a smaller batch")


SECTIONS: dict[str, type[_Section]] = {"data": DataConfig, "model": ModelConfig, "trainer": TrainerConfig}


def all_keys() -> list[str]:
    """Every dotted key of the schema, e.g. ``trainer.max_epochs``."""
    return [f"{s}.{k}" for s, cls in SECTIONS.items() for k in cls.model_fields]


def _describe_error(err: dict[str, Any], source: str) -> str:
    """One line for one pydantic error: the dotted key, expectation and what was found."""
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    if not loc:  # a whole-config check (model_validator): its message names the key itself
        return f"{source}: {err['msg'].replace('Value error, ', '')}"
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


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with duplicate mapping keys an error instead of last-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: the base constructor reports it
                continue
            if first is not None:
                raise ValueError(f"line {line}: expected each key once per mapping, but got '{key}' again "
                                 f"(first at line {first})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_depth(text: str) -> None:
    """ValueError when lists/mappings nest deeper than ``MAX_YAML_DEPTH`` (from parser events,
    which PyYAML produces without recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ValueError(f"expected at most {MAX_YAML_DEPTH} levels of nesting, but got more")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int], depth: int = 0) -> int:
    """Nodes ``node`` stands for once every alias is expanded (shared nodes counted each time)."""
    if depth > MAX_YAML_DEPTH:
        raise ValueError(f"expected at most {MAX_YAML_DEPTH} levels of nesting, but got more")
    if id(node) in memo:
        return memo[id(node)]
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    memo[id(node)] = total = 1 + sum(_expanded_size(c, memo, depth + 1) for c in children)
    return total


def parse_yaml(data: bytes | str, source: str) -> Any:
    """One YAML document from untrusted bytes, within limits; one-line ConfigErrors.

    Refused: more than ``MAX_CONFIG_BYTES``, binary or non-UTF-8 text, more than
    ``MAX_YAML_NODES`` nodes after alias expansion ("billion laughs"), nesting deeper than
    ``MAX_YAML_DEPTH``, and a key repeated in one mapping (named with its line).
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: expected a YAML file of at most {MAX_CONFIG_BYTES >> 20} MiB, "
                          f"but got {len(raw)} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: expected UTF-8 YAML text, but got a binary or non-UTF-8 file "
                          f"(byte {exc.start})") from None
    if "\x00" in text:
        raise ConfigError(f"{source}: expected YAML text, but got a binary file (NUL byte at offset {text.index(chr(0))})")
    loader = None
    try:
        _check_depth(text)  # before composing, which recurses (slowly) into RecursionError
        loader = _StrictLoader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_NODES:
            raise ValueError(f"expected at most {MAX_YAML_NODES} values after expanding aliases, but got {size:.3g}")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{source}: expected valid YAML, but parsing failed{where}: {problem}") from None
    except (ValueError, RecursionError) as exc:
        problem = str(exc) if isinstance(exc, ValueError) else f"expected at most {MAX_YAML_DEPTH} levels of nesting, but got more"
        raise ConfigError(f"{source}: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: str | Path, what: str = "a YAML config file") -> Any:
    """Bytes of ``path`` (at most ``MAX_CONFIG_BYTES`` read) parsed by ``parse_yaml``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: expected {what}, but it does not exist")
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: expected a readable file, but got {exc.strerror or exc}") from None
    if max(size, len(data)) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: expected a YAML file of at most {MAX_CONFIG_BYTES >> 20} MiB, but got {size} bytes")
    return parse_yaml(data, str(p))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config mapping, with one-line errors for a missing, malformed or hostile file."""
    raw = read_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with sections data/model/trainer, but got {type(raw).__name__}")
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
        parsed = parse_yaml(value, f"override '{text}'") if value.strip() else None
    except ConfigError as exc:
        if "expected valid YAML" not in str(exc):
            raise
        parsed = value
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with dotted ``key=value`` overrides applied (validated later)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in SECTIONS:
            raise ConfigError(f"override '{text}': unknown section '{section}'{did_you_mean(section, SECTIONS)}")
        if key not in SECTIONS[section].model_fields and f"{section}.{key}" not in OLD_KEYS:
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
    """Write ``config.yaml`` atomically, in the original pipeline's section order."""
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
