"""One typed run configuration (pydantic models), loadable from YAML and overridable by flags.

Every key is checked before any work starts: unknown keys, wrong types and
out-of-range values raise :class:`ConfigError` naming the field (e.g.
``train.phases.1.lr must be >= 0, got -0.1``). Defaults, then a preset, then
the YAML file, then ``--set section.key=value`` overrides (values parsed as YAML).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data.images import DEFAULT_MAX_PIXELS
from .data.layouts import DEFAULT_DATA, FORMATS
from .data.preprocessing import BAG_KINDS, VIEW_KINDS
from .errors import ConfigError, brief
from .presets import PRESETS


def _yaml_number(value: Any) -> Any:
    # YAML 1.1 reads "1e-3" (no dot) as a string; users mean the number.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Float = Annotated[float, BeforeValidator(_yaml_number)]


class _Section(BaseModel):
    # strict: no silent coercion ("yes" is not true, 1.5 is not an int); an int is still a valid float.
    model_config = ConfigDict(strict=True, extra="forbid", validate_default=True)


class DataConfig(_Section):
    path: str = str(DEFAULT_DATA)
    labels: str | None = None
    format: Literal[FORMATS] = "auto"  # type: ignore[valid-type]
    val: Float = Field(0.15, ge=0, lt=1)
    test: Float = Field(0.15, ge=0, lt=1)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0)

    @model_validator(mode="after")
    def _parts_leave_training_images(self) -> "DataConfig":
        if self.val + self.test >= 1:
            raise ValueError(f"data.val + data.test must be < 1, got {self.val} + {self.test}")
        return self


class ModelConfig(_Section):
    backbone: str = "lite0"
    weights: str = "default"
    head: str = "reference"  # reference | linear (pooled features) | csra | query (the feature map)
    dropout: Float = Field(0.5, ge=0, lt=1)
    image_size: int = Field(0, ge=0, le=1024)  # 0: the backbone's native size
    csra_lambda: Float = Field(0.1, ge=0)  # csra head: weight of the class-specific attention term (0: average pooling)
    csra_temperature: Float = Field(1.0, gt=0)  # csra head: softmax temperature over locations (large: max pooling)
    # Multi-instance model: each image is this bag of views (orig + regions), scored one by one and pooled per
    # label by bag_pool. [] (default): one view per image. Training fills the orig slot from train.views.
    bag: list[str] = Field(default_factory=list)
    bag_pool: Literal["mean", "max", "lse", "attention"] = "lse"

    @field_validator("bag")
    @classmethod
    def _bag_of_fixed_views(cls, bag: list[str]) -> list[str]:
        if bag and (bag[0] != "orig" or any(k not in BAG_KINDS for k in bag) or len(set(bag)) != len(bag)):
            raise ValueError(f"a bag is orig followed by distinct regions from {list(BAG_KINDS[1:])}, got {bag}")
        return bag

    def head_options(self) -> dict[str, float]:
        """The head's own settings, as checkpoints record them (only those of the chosen head)."""
        if self.head == "csra":
            return {"csra_lambda": self.csra_lambda, "csra_temperature": self.csra_temperature}
        return {}


class PhaseConfig(_Section):
    """One fine-tuning phase: what is trainable and for how long."""

    name: str = "head"
    unfreeze: Float = Field(0.0, ge=0, le=1)  # fraction of backbone parameters trainable (top first)
    epochs: int = Field(5, ge=0)
    lr: Float = Field(0.0, ge=0)  # 0: pick with the LR finder
    lr_mult: Float = Field(10.0, ge=1)  # discriminative LRs: head gets lr, first trainable piece lr / lr_mult
    # > 0: end the phase after this many epochs of its ``epochs``-long one-cycle schedule (a refit
    # stops where the evaluated run's selected epoch was, on the same schedule).
    stop: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _stop_within_schedule(self) -> "PhaseConfig":
        if self.stop > self.epochs:
            raise ValueError(f"stop ({self.stop}) must be <= epochs ({self.epochs})")
        return self

    @property
    def epochs_run(self) -> int:
        """Epochs this phase trains: ``stop`` when set, else all of its schedule."""
        return self.stop or self.epochs


def _default_phases() -> list[PhaseConfig]:
    return [
        PhaseConfig(name="head", unfreeze=0.0, epochs=8, lr=0.0, lr_mult=1.0),
        # Fixed LRs for the unfreezing phases: after the head is trained the finder's curve is
        # flat and noisy (mixup): its valley can land on noise (1.5e-6 in one measured run, so
        # the 1e-5 floor) and fine-tuning then barely moves. Measured choice: docs/experiments.md.
        PhaseConfig(name="unfreeze60", unfreeze=0.6, epochs=8, lr=1e-3, lr_mult=10.0),
        PhaseConfig(name="unfreeze80", unfreeze=0.8, epochs=6, lr=5e-4, lr_mult=10.0),
    ]


class TrainConfig(_Section):
    seed: int = Field(0, ge=0, lt=2**32)
    batch_size: int = Field(32, gt=0)
    optimizer: Literal["adam", "adamw"] = "adamw"
    weight_decay: Float = Field(0.01, ge=0)
    loss: Literal["bce", "asl"] = "bce"
    pos_weight: bool = False
    label_smoothing: Float = Field(0.0, ge=0, lt=0.5)
    mixup: Float = Field(0.4, ge=0)  # Beta(alpha, alpha) mixup of cached activations; 0 = off
    # Incomplete labels (bce loss): share of the model's own probability in the targets (soft bootstrapping),
    # and a probability above which a label not given is left out of the loss (0: off). See train/losses.py.
    bootstrap: Float = Field(0.0, ge=0, lt=1)
    ignore_negatives_above: Float = Field(0.0, ge=0, lt=1)
    asl_gamma_neg: Float = 4.0
    asl_gamma_pos: Float = 0.0
    asl_clip: Float = 0.05
    views: list[str] = Field(default_factory=lambda: ["orig", "flip", "crop", "crop", "crop_flip", "crop_flip"], min_length=1)
    lr_find: bool = True  # sweep in every phase (plot + suggestion); phases with lr 0 always sweep and use it
    lr_find_steps: int = Field(60, ge=10)
    phases: list[PhaseConfig] = Field(default_factory=_default_phases, min_length=1)
    threads: int = Field(0, ge=0)  # 0: all cores
    device: str = "auto"  # auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:N | mps
    amp: Literal["", "bf16", "fp16"] = ""  # mixed precision on GPU
    freeze_bn: bool = True  # backbone BatchNorm keeps its pretrained statistics while fine-tuning
    cache_dir: str = ""  # "": <run>/cache; share one folder between runs to reuse caches (keys keep them apart)
    cache: bool = True  # False: recompute the frozen part every batch (only for benchmarks)
    cache_dtype: Literal["float16", "float32"] = "float16"
    cache_in_memory_gb: Float = Field(4.0, ge=0)
    engine: Literal["auto", "onnx", "torch"] = "auto"  # forward-only engine for frozen passes
    tta: bool = True  # average original + horizontal flip at evaluation
    threshold_mode: Literal["per_label", "joint", "fixed"] = "per_label"
    select: Literal["f1", "loss"] = "f1"  # best.pt = the epoch with the best val samples-F1 at 0.5 (f1) or the lowest val BCE (loss)
    calibrate: bool = False  # fit a temperature per label on val (stored in the checkpoint)
    # Distillation: a checkpoint (an ensemble or one model) whose probabilities on every cached view
    # of every training image become soft targets: target = (1 - teacher_weight) * labels + teacher_weight * teacher.
    teacher: str = ""
    teacher_weight: Float = Field(0.5, ge=0, le=1)

    @field_validator("views")
    @classmethod
    def _known_views(cls, views: list[str]) -> list[str]:
        bad = [v for v in views if v not in VIEW_KINDS]
        if bad:
            raise ValueError(f"unknown view(s) {bad}; choose from {list(VIEW_KINDS)}")
        return views

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device in ("auto", "cpu", "mps", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
            return device
        raise ValueError(f"must be auto, cpu, cuda, cuda:N or mps, got {device!r}")


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# Named sets of overrides on top of the defaults (see docs/experiments.md for what each measured).

_TYPE_WORDS = {
    "int_type": "expected int", "int_from_float": "expected int", "float_type": "expected a number", "bool_type": "expected true/false",
    "string_type": "expected a string", "list_type": "expected a list", "model_type": "expected a mapping", "dict_type": "expected a mapping",
}  # fmt: skip
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def _describe(err: dict[str, Any]) -> str:
    """One pydantic error as one line naming the key."""
    loc = ".".join(str(part) for part in err["loc"])
    kind, value = err["type"], err.get("input")
    if kind in _TYPE_WORDS:
        return f"{loc}: {_TYPE_WORDS[kind]}, got {type(value).__name__} {value!r}"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"{loc} must be {op} {err['ctx'][key]}, got {value!r}"
    if kind == "literal_error":
        return f"{loc} must be {err['ctx']['expected']}, got {value!r}"
    if kind == "too_short":
        return f"{loc} must not be empty"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def config_from_dict(d: dict[str, Any]) -> Config:
    """Validate a plain mapping; every problem is reported at once (unknown keys first)."""
    try:
        return Config.model_validate(d)
    except ValidationError as e:
        errors = e.errors()
        unknown = [".".join(str(p) for p in err["loc"]) for err in errors if err["type"] == "extra_forbidden"]
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}") from None
        raise ConfigError("; ".join(_describe(err) for err in errors)) from None


def load_config(path: Path | str | None = None, overrides: list[str] | None = None, preset: str = "default", base: Config | None = None) -> Config:
    """Defaults (or ``base``), then a preset, then the YAML file, then ``key.sub=value`` overrides (values parsed as YAML)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    d: dict[str, Any] = (base or Config()).to_dict()
    _apply_overrides(d, PRESETS[preset])
    if path is not None:
        _merge(d, _read_yaml(Path(path)))
    _apply_overrides(d, overrides or [])
    return config_from_dict(d)


def _read_yaml(p: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{p}: not a valid YAML text file ({brief(e)})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return loaded


def _apply_overrides(d: dict[str, Any], overrides: list[str]) -> None:
    for ov in overrides:
        key, sep, raw = ov.partition("=")
        if not sep:
            raise ConfigError(f"override {ov!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_path(d, key.strip(), value)


def _merge(base: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if k in base and isinstance(base[k], dict) and isinstance(v, dict):
            _merge(base[k], v)
        else:
            base[k] = v


def _set_path(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur: Any = d
    for i, part in enumerate(parts[:-1]):
        if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            raise ConfigError(f"unknown config key: {'.'.join(parts[: i + 1])}")
    last = parts[-1]
    if isinstance(cur, list) and last.isdigit() and int(last) < len(cur):
        cur[int(last)] = value
    elif isinstance(cur, dict) and last in cur:
        cur[last] = value
    else:
        raise ConfigError(f"unknown config key: {key}")


def flatten_config(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; lists of mappings by index (``train.phases.1.lr``), other lists as values."""
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, sub in items:
        flat |= flatten_config(sub, f"{prefix}.{key}" if prefix else key)
    return flat


def same_setting(a: Any, b: Any) -> bool:
    """Equal values, or two spellings of one path (``../data`` and its absolute form: runs store theirs absolute)."""
    if a == b:
        return True
    return isinstance(a, str) and isinstance(b, str) and bool(a) and bool(b) and ("/" in a or "/" in b) and Path(a).resolve() == Path(b).resolve()


def config_diff(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs (``train.phases.1.lr``, ``model.backbone``)."""

    def walk(x: Any, y: Any, where: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            return [k for key in x.keys() | y.keys() for k in walk(x.get(key), y.get(key), f"{where}.{key}" if where else key)]
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and all(isinstance(v, dict) for v in x + y):
            return [k for i, (u, v) in enumerate(zip(x, y)) for k in walk(u, v, f"{where}.{i}")]
        return [] if x == y else [where]

    return sorted(walk(a.to_dict(), b.to_dict(), ""))


def changed_keys(run_config: Path | str, path: Path | str | None, overrides: list[str], preset: str = "default") -> list[str]:
    """What a config file, overrides and preset would change in a run's saved config (empty: nothing)."""
    saved = load_config(run_config)
    if path is None and not overrides and preset == "default":
        return []
    return config_diff(saved, with_absolute_paths(load_config(path, overrides, preset, base=saved)))


def with_absolute_paths(cfg: Config) -> Config:
    """A copy whose file paths do not depend on the current folder (a run folder can be used from anywhere)."""
    out = cfg.model_copy(deep=True)
    out.data.path = str(Path(out.data.path).absolute())
    if out.data.labels:
        out.data.labels = str(Path(out.data.labels).absolute())
    if out.train.cache_dir:
        out.train.cache_dir = str(Path(out.train.cache_dir).absolute())
    if out.model.weights not in ("default", "none"):
        out.model.weights = str(Path(out.model.weights).absolute())
    if out.train.teacher:
        out.train.teacher = str(Path(out.train.teacher).absolute())
    return out


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
