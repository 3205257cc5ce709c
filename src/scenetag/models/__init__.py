"""Models: backbones with offline weights, heads, the piecewise multi-label network, ensembles."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ModelError
from .ensemble import EnsembleNet, ensemble_net
from .net import MultiLabelNet, build_model, model_from_spec, model_preprocessing

__all__ = ["ModelError", "EnsembleNet", "MultiLabelNet", "build_model", "ensemble_net", "model_from_spec", "from_meta", "model_preprocessing"]


def from_meta(meta: dict[str, Any]) -> nn.Module:
    """The untrained network a checkpoint's metadata describes (its weights are loaded separately)."""
    if meta.get("members"):
        return ensemble_net(meta)
    return model_from_spec(meta, len(meta["classes"]))
