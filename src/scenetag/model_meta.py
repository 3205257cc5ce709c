"""A model's self-description (classes, thresholds, preprocessing, ...): built and read in one place.

Checkpoints (``.pt``) and exported models (ONNX metadata, JSON sidecars) carry
the same dictionary. This module needs neither torch nor onnxruntime.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

from .errors import CheckpointError
from .version import __version__

FORMAT_VERSION = 1
# What a checkpoint says about the network it holds (an ensemble's members say it per member).
MODEL_KEYS = ("backbone", "head", "head_options", "bag", "bag_pool", "dropout", "preprocessing", "temperatures", "thresholds")


def build_meta(
    classes: Sequence[str],
    model_cfg: dict[str, Any],
    preprocessing: dict[str, Any],
    thresholds: Sequence[float],
    metrics: dict[str, Any],
    config: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What a checkpoint says about itself, in plain types only (weights_only loading reads nothing else).

    ``model_cfg`` holds ``backbone``, ``head``, ``dropout``, ``head_options`` and ``bag``/``bag_pool``; ``extra`` adds
    fields such as ``boundary``, ``temperatures`` or an ensemble's ``members``.
    """
    meta = {
        "classes": list(classes),
        "backbone": model_cfg["backbone"],
        "head": model_cfg["head"],
        "preprocessing": dict(preprocessing),
        "thresholds": [float(x) for x in thresholds],
        "fallback": True,
        "metrics": json.loads(json.dumps(metrics, default=float)),
        "format_version": FORMAT_VERSION,
        "scenetag_version": __version__,
    }
    if "dropout" in model_cfg:
        meta["dropout"] = model_cfg["dropout"]
    if model_cfg.get("head_options"):
        meta["head_options"] = dict(model_cfg["head_options"])
    if model_cfg.get("bag"):  # a multi-instance model: its input is this bag of views per image
        meta["bag"], meta["bag_pool"] = list(model_cfg["bag"]), model_cfg["bag_pool"]
    if config is not None:
        meta["config"] = config
    return meta | extra


def meta_tta(meta: dict[str, Any]) -> bool:
    """Whether predictions average the flipped image too: the model's own setting (top level, else its training config)."""
    return bool(meta.get("tta", meta.get("config", {}).get("train", {}).get("tta", True)))


INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
RESIZES = ("squash", "crop")
MAX_IMAGE_SIZE = 1024


def _number_list(value: Any, n: int, key: str, low: float, high: float, low_open: bool = False) -> list[str]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        return [f"{key} must be a list of {n} numbers"]
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v > high or v < low or (low_open and v == low):
            return [f"{key} must hold {n} finite numbers in {'(' if low_open else '['}{low:g}, {high:g}], got {v!r}"]
    return []


def _preprocessing_problems(pp: Any, key: str = "preprocessing") -> list[str]:
    if not isinstance(pp, dict):
        return [f"{key} is missing"]
    size = pp.get("size")
    out = [] if isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_IMAGE_SIZE else [f"{key}.size must be an integer in [1, {MAX_IMAGE_SIZE}], got {size!r}"]
    out += _number_list(pp.get("mean"), 3, f"{key}.mean", -10, 10)
    out += _number_list(pp.get("std"), 3, f"{key}.std", 0, 10, low_open=True)
    if pp.get("interpolation", "bicubic") not in INTERPOLATIONS:
        out.append(f"{key}.interpolation must be one of {', '.join(INTERPOLATIONS)}, got {pp.get('interpolation')!r}")
    if pp.get("resize", "squash") not in RESIZES:
        out.append(f"{key}.resize must be one of {', '.join(RESIZES)}, got {pp.get('resize')!r}")
    crop = pp.get("crop_pct", 0.875)
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1:
        out.append(f"{key}.crop_pct must be in (0, 1], got {crop!r}")
    return out


def meta_problems(meta: Any) -> list[str]:
    """Everything wrong with a model's self-description (empty when it can be used)."""
    if not isinstance(meta, dict):
        return ["metadata is not a mapping"]
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        return [f"classes must be a non-empty list of distinct names, got {classes!r}"]
    n = len(classes)
    out = [f"{key} is missing" for key in ("backbone", "head") if not isinstance(meta.get(key), str)]
    out += _number_list(meta.get("thresholds"), n, "thresholds", 0, 1)
    options = meta.get("head_options", {})
    if not isinstance(options, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in options.values()):
        out.append(f"head_options must map names to finite numbers, got {options!r}")
    bag = meta.get("bag")
    # The view names themselves are checked where views are made (infer.predictor), a layer above this one.
    if bag is not None and (not isinstance(bag, list) or not bag or bag[0] != "orig" or not all(isinstance(k, str) for k in bag) or not isinstance(meta.get("bag_pool"), str)):
        out.append(f"bag must be a list of view names starting with orig, with a bag_pool, got {bag!r}")
    if meta.get("temperatures") is not None:
        out += _number_list(meta["temperatures"], n, "temperatures", 0, 1000, low_open=True)
    out += _preprocessing_problems(meta.get("preprocessing"))
    for i, member in enumerate(meta.get("members") or []):
        if not isinstance(member, dict):
            out.append(f"members.{i} is not a mapping")
            continue
        out += _preprocessing_problems(member.get("preprocessing"), f"members.{i}.preprocessing")
        if member.get("temperatures") is not None:
            out += _number_list(member["temperatures"], n, f"members.{i}.temperatures", 0, 1000, low_open=True)
    return out


def validate_meta(meta: Any, where: str) -> dict[str, Any]:
    """``meta`` if usable, else a CheckpointError naming the file and every problem."""
    problems = meta_problems(meta)
    if problems:
        raise CheckpointError(f"{where}: unusable model metadata: {'; '.join(problems)}")
    return meta
