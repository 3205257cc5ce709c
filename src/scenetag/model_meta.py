"""A model's self-description (classes, thresholds, preprocessing, ...): built and read in one place.

Checkpoints (``.pt``) and exported models (ONNX metadata, JSON sidecars) carry
the same dictionary. This module needs neither torch nor onnxruntime.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from .version import __version__

FORMAT_VERSION = 1
# What a checkpoint says about the network it holds (an ensemble's members say it per member).
MODEL_KEYS = ("backbone", "head", "dropout", "preprocessing", "temperatures", "thresholds")


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

    ``model_cfg`` holds ``backbone``, ``head`` and ``dropout``; ``extra`` adds
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
    if config is not None:
        meta["config"] = config
    return meta | extra


def meta_tta(meta: dict[str, Any]) -> bool:
    """Whether predictions average the flipped image too: the model's own setting (top level, else its training config)."""
    return bool(meta.get("tta", meta.get("config", {}).get("train", {}).get("tta", True)))
