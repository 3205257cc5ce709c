"""Compatibility: prediction, now in :mod:`scenetag.infer` (``Predictor`` is documented in the README)."""
from __future__ import annotations

from .infer.outputs import Prediction, write_predictions
from .infer.predictor import Predictor, expand_paths, shard

__all__ = ["Prediction", "Predictor", "expand_paths", "shard", "write_predictions"]
