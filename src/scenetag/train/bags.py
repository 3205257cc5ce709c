"""Which cached views a run trains and evaluates on, and how a multi-instance model's bags are drawn from them.

Without a bag (``model.bag`` empty) training caches ``train.views`` and draws one per
image per epoch; evaluation caches the image and its mirror image (flip TTA).
With a bag, e.g. ``[orig, region_tl, region_tr, region_bl, region_br]``, every
training step sees all of an image's instances at once: the ``orig`` slot is
drawn from ``train.views`` (today's augmentation), each region slot from the
region or its mirror image. Evaluation scores the bag and (TTA) the mirrored
bag, and averages the two probabilities, as a prediction does from the image.
"""
from __future__ import annotations

import numpy as np

from ..config import Config
from ..data.preprocessing import mirrored


def train_kinds(cfg: Config) -> list[str]:
    """The views the training cache holds for every image."""
    regions = cfg.model.bag[1:]
    return list(cfg.train.views) + list(regions) + [mirrored(kind) for kind in regions]


def train_slots(cfg: Config) -> list[np.ndarray] | None:
    """Per instance of a bag, the training-cache views it is drawn from (None: not a bag model)."""
    if not cfg.model.bag:
        return None
    n_views, regions = len(cfg.train.views), cfg.model.bag[1:]
    return [np.arange(n_views)] + [np.array([n_views + i, n_views + len(regions) + i]) for i in range(len(regions))]


def draw_bags(slots: list[np.ndarray], n_images: int, rng: np.random.Generator) -> np.ndarray:
    """For each image, one cached view per slot: (images, instances) view indices."""
    return np.stack([slot[rng.integers(0, len(slot), size=n_images)] for slot in slots], axis=1)


def eval_kinds(cfg: Config) -> list[str]:
    """The views the evaluation cache holds: the bag (or the image), then its mirror image when TTA is on."""
    base = list(cfg.model.bag) or ["orig"]
    return base + [mirrored(kind) for kind in base] if cfg.train.tta else base


def eval_bags(cfg: Config) -> np.ndarray | None:
    """(bags, instances) evaluation-cache views of each scored bag (None: not a bag model, each view scored alone)."""
    if not cfg.model.bag:
        return None
    size = len(cfg.model.bag)
    return np.arange(len(eval_kinds(cfg))).reshape(-1, size)
