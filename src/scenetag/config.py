"""One typed run configuration (dataclasses), loadable from YAML and overridable by flags.

Every key is checked before any work starts: unknown keys, wrong types and
out-of-range values raise :class:`ConfigError` naming the field.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import DEFAULT_MAX_PIXELS


class ConfigError(ValueError):
    """A bad configuration value: the message names the field."""


@dataclass
class DataConfig:
    path: str = "../shared/data/miml-scene"
    labels: str | None = None
    format: str = "auto"
    val: float = 0.15
    test: float = 0.15
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class ModelConfig:
    backbone: str = "lite0"
    weights: str = "default"
    head: str = "reference"
    dropout: float = 0.5
    image_size: int = 0  # 0: the backbone's native size


@dataclass
class PhaseConfig:
    """One fine-tuning phase: what is trainable and for how long."""

    name: str = "head"
    unfreeze: float = 0.0  # fraction of backbone parameters trainable (top first)
    epochs: int = 5
    lr: float = 0.0  # 0: pick with the LR finder
    lr_mult: float = 10.0  # discriminative LRs: head gets lr, first trainable piece lr / lr_mult


def _default_phases() -> list[PhaseConfig]:
    return [
        PhaseConfig("head", 0.0, 8, 0.0, 1.0),
        # Fixed LRs for the unfreezing phases: after the head is trained the finder's curve is
        # flat and noisy (mixup): its valley can land on noise (1.5e-6 in one measured run, so
        # the 1e-5 floor) and fine-tuning then barely moves. Measured choice: docs/experiments.md.
        PhaseConfig("unfreeze60", 0.6, 8, 1e-3, 10.0),
        PhaseConfig("unfreeze80", 0.8, 6, 5e-4, 10.0),
    ]


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 32
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    loss: str = "bce"  # bce | asl
    pos_weight: bool = False
    label_smoothing: float = 0.0
    mixup: float = 0.4  # Beta(alpha, alpha) mixup of cached activations; 0 = off
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    views: list[str] = field(default_factory=lambda: ["orig", "flip", "crop", "crop", "crop_flip", "crop_flip"])
    lr_find: bool = True  # sweep in every phase (plot + suggestion); phases with lr 0 always sweep and use it
    lr_find_steps: int = 60
    phases: list[PhaseConfig] = field(default_factory=_default_phases)
    threads: int = 0  # 0: all cores
    device: str = "auto"  # auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:N | mps
    amp: str = ""  # "" | bf16 | fp16: mixed precision on GPU
    freeze_bn: bool = True  # backbone BatchNorm keeps its pretrained statistics while fine-tuning
    cache_dir: str = ""  # "": <run>/cache; share one folder between runs to reuse caches (keys keep them apart)
    cache: bool = True  # False: recompute the frozen part every batch (only for benchmarks)
    cache_dtype: str = "float16"
    cache_in_memory_gb: float = 4.0
    engine: str = "auto"  # forward-only engine for frozen passes: auto | onnx | torch
    tta: bool = True  # average original + horizontal flip at evaluation
    threshold_mode: str = "per_label"  # per_label | joint | fixed
    select: str = "f1"  # best.pt = the epoch with the best val samples-F1 at 0.5 (f1) or the lowest val BCE (loss)
    calibrate: bool = False  # fit a temperature per label on val (stored in the checkpoint)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        """Range checks that types alone do not catch."""
        t = self.train
        checks = [
            (0 <= self.data.val < 1, "data.val must be in [0, 1)"),
            (0 <= self.data.test < 1, "data.test must be in [0, 1)"),
            (self.data.val + self.data.test < 1, "data.val + data.test must be < 1"),
            (self.data.max_pixels > 0, "data.max_pixels must be > 0"),
            (0 <= self.model.dropout < 1, "model.dropout must be in [0, 1)"),
            (self.model.image_size >= 0, "model.image_size must be >= 0"),
            (t.batch_size > 0, "train.batch_size must be > 0"),
            (t.optimizer in ("adam", "adamw"), "train.optimizer must be adam or adamw"),
            (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
            (t.loss in ("bce", "asl"), "train.loss must be bce or asl"),
            (0 <= t.label_smoothing < 0.5, "train.label_smoothing must be in [0, 0.5)"),
            (t.mixup >= 0, "train.mixup must be >= 0"),
            (len(t.views) > 0, "train.views must not be empty"),
            (t.threshold_mode in ("per_label", "joint", "fixed"), "train.threshold_mode must be per_label, joint or fixed"),
            (t.select in ("f1", "loss"), "train.select must be f1 or loss"),
            (len(t.phases) > 0, "train.phases must not be empty"),
            (t.lr_find_steps >= 10, "train.lr_find_steps must be >= 10"),
            (t.cache_dtype in ("float16", "float32"), "train.cache_dtype must be float16 or float32"),
            (t.amp in ("", "bf16", "fp16"), "train.amp must be bf16, fp16 or empty"),
            (t.device == "auto" or t.device in ("cpu", "mps") or t.device.startswith("cuda"), "train.device must be auto, cpu, cuda[:N] or mps"),
            (t.engine in ("auto", "onnx", "torch"), "train.engine must be auto, onnx or torch"),
            (t.cache_in_memory_gb >= 0, "train.cache_in_memory_gb must be >= 0"),
        ]
        from .transforms import VIEW_KINDS

        bad_views = [v for v in t.views if v not in VIEW_KINDS]
        checks.append((not bad_views, f"train.views: unknown view(s) {bad_views}; choose from {list(VIEW_KINDS)}"))
        for i, p in enumerate(t.phases):
            checks += [
                (p.lr >= 0, f"train.phases[{i}].lr must be >= 0 (0 = LR finder), got {p.lr}"),
                (p.epochs >= 0, f"train.phases[{i}].epochs must be >= 0"),
                (0 <= p.unfreeze <= 1, f"train.phases[{i}].unfreeze must be in [0, 1]"),
                (p.lr_mult >= 1, f"train.phases[{i}].lr_mult must be >= 1"),
            ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        return self


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` coerced to ``tp`` (int -> float is allowed) or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {tp}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; users mean the number.
        try:
            return float(value)
        except ValueError:
            pass
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type, d: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)} (known: {', '.join(sorted(names))})")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in d.items()}
    return cls(**kwargs)


# Named sets of overrides on top of the defaults (see docs/experiments.md for what each measured).
PRESETS: dict[str, list[str]] = {
    "default": [],
    "best": ["model.backbone=lite2"],  # slower: Lite2 at 260 px
}


def load_config(path: Path | str | None = None, overrides: list[str] | None = None, preset: str = "default") -> Config:
    """Defaults, then a preset, then the YAML file, then ``key.sub=value`` overrides (values parsed as YAML)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    d: dict[str, Any] = Config().to_dict()
    _apply_overrides(d, PRESETS[preset])
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        _merge(d, loaded, "")
    _apply_overrides(d, overrides or [])
    return from_dict(Config, d).validate()


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


def _merge(base: dict[str, Any], new: dict[str, Any], where: str) -> None:
    for k, v in new.items():
        if k in base and isinstance(base[k], dict) and isinstance(v, dict):
            _merge(base[k], v, f"{where}{k}.")
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


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
