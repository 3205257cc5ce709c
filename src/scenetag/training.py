"""Compatibility: the training entry points, now in :mod:`scenetag.train`."""
from __future__ import annotations

from .train.cv import cross_validate
from .train.recipe import lr_find_only, train, train_or_resume, weights_digest

__all__ = ["cross_validate", "lr_find_only", "train", "train_or_resume", "weights_digest"]
