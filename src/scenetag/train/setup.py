"""Everything a run needs before its first phase: threads and seeds, device and ranks, data and
split, the pretrained model, and the activation caches of its frozen part.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..version import __version__
from ..config import Config
from ..data.dataset import MultiLabelDataset
from ..data.layouts import load_dataset
from ..data.splits import Split, split_dataset
from ..data.preprocessing import Preprocessing
from ..errors import ConfigError
from ..model_meta import build_meta
from ..models.heads import SPATIAL_HEADS
from ..models.net import MultiLabelNet, build_model, model_preprocessing
from .bags import eval_bags, eval_kinds, train_kinds
from .batches import batches_per_epoch, no_batch_error, predict_cached
from .cache import ActivationCache, StackedCaches, build_cache
from .recompute import RecomputedActivations
from .distributed import DistInfo, GradSync, gather_rows, init_distributed, pick_device, shard_of

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: int) -> int:
    # Under torchrun the local processes share the cores.
    n = n or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
    return n


def versions() -> dict[str, str]:
    import sklearn
    import timm
    import torchvision

    return {
        "scenetag": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
    }


def phase_boundaries(model: MultiLabelNet, cfg: Config) -> list[int]:
    """The piece index each phase trains from (len(pieces) = head only, on pooled features)."""
    n = len(model.pieces())
    return [n if p.unfreeze == 0 else model.boundary_for_fraction(p.unfreeze) for p in cfg.train.phases]


def model_identity(cfg: Config) -> dict[str, Any]:
    """What makes the frozen network's numbers what they are (part of the cache key)."""
    w = cfg.model.weights
    if w not in ("default", "none") and Path(w).is_file():
        st = Path(w).stat()
        w = f"{Path(w).resolve()}:{st.st_size}:{int(st.st_mtime)}"
    if w == "none":  # a random initialisation is drawn from the run's seed
        w = f"none:seed={cfg.train.seed}"
    identity = {"backbone": cfg.model.backbone, "weights": w}
    if cfg.model.head in SPATIAL_HEADS:  # the last tap then holds the feature map, not the pooled vector
        identity["head_input"] = "map"
    return identity


@dataclass(frozen=True)
class CacheLayout:
    """Which images each cache holds and where the split's parts are in it (this rank's share)."""

    train_ids: np.ndarray  # data set rows in the training cache
    held_ids: np.ndarray  # data set rows in the evaluation cache
    train_rows: np.ndarray  # rows of the training cache this rank trains on
    val_rows: np.ndarray  # rows of the evaluation cache holding (this rank's part of) split.val
    test_rows: np.ndarray
    val_order: np.ndarray  # positions of those rows within split.val
    test_order: np.ndarray


def cache_layout(n_images: int, split: Split, info: DistInfo, cache_all_images: bool) -> CacheLayout:
    """``cache_all_images``: both caches hold every image, so the folds of a cross-validation share them."""
    if cache_all_images:
        every = np.arange(n_images)
        return CacheLayout(every, every, split.train, split.val, split.test, np.arange(len(split.val)), np.arange(len(split.test)))
    train_ids = split.train[shard_of(len(split.train), info)]
    held_all = np.concatenate([split.val, split.test])
    pos = shard_of(len(held_all), info)
    val_rows, test_rows = np.flatnonzero(pos < len(split.val)), np.flatnonzero(pos >= len(split.val))
    return CacheLayout(train_ids, held_all[pos], np.arange(len(train_ids)), val_rows, test_rows, pos[val_rows], pos[test_rows] - len(split.val))


@dataclass
class TrainingSetup:
    """A prepared run: config, data, split, model, caches, and where this process stands among ranks."""

    cfg: Config
    ds: MultiLabelDataset
    split: Split
    model: MultiLabelNet
    pp: Preprocessing
    train_acts: ActivationCache | StackedCaches | RecomputedActivations  # the same questions, answered from files or recomputed
    eval_acts: ActivationCache | RecomputedActivations
    layout: CacheLayout
    dist: DistInfo
    device: str
    grad_sync: GradSync
    # Distillation: targets per row of the training cache and view (rows, views, classes); None: the labels.
    train_targets: np.ndarray | None = None

    @property
    def y_train(self) -> np.ndarray:
        """Targets of the training rows this rank trains on: their labels, or per view when distilling."""
        if self.train_targets is not None:
            return self.train_targets[self.layout.train_rows]
        return self.ds.labels[self.layout.train_ids[self.layout.train_rows]]

    def labels(self, part: str) -> np.ndarray:
        return self.ds.labels[getattr(self.split, part)]

    def predict_part(self, boundary: int, part: str) -> np.ndarray:
        """TTA probabilities for all of split.val or split.test, gathered from every rank."""
        rows, order = (self.layout.val_rows, self.layout.val_order) if part == "val" else (self.layout.test_rows, self.layout.test_order)
        local = predict_cached(self.model, self.eval_acts, boundary, rows, device=self.device, bags=eval_bags(self.cfg))
        return gather_rows(order, local, len(getattr(self.split, part)), self.dist)

    def meta(self, boundary: int, thresholds: np.ndarray, metrics: dict, **extra: Any) -> dict[str, Any]:
        """What a checkpoint of this run says about itself."""
        m = self.cfg.model
        model_cfg = {"backbone": m.backbone, "head": m.head, "dropout": m.dropout, "head_options": m.head_options(), "bag": m.bag, "bag_pool": m.bag_pool}
        return build_meta(self.ds.classes, model_cfg, self.pp.to_dict(), thresholds, metrics, config=self.cfg.to_dict(), boundary=int(boundary), **extra)


def check_trainable(n_train: int, batch_size: int) -> None:
    """Refuse, before any caching, a run that could not take one training step (BatchNorm needs 2 images a batch)."""
    if not batches_per_epoch(n_train, batch_size):
        raise no_batch_error(n_train, batch_size)


def _build_caches(cfg: Config, model: MultiLabelNet, pp: Preprocessing, ds: MultiLabelDataset, layout: CacheLayout, cache_dir: Path | None, device: str, progress: bool, train_parts: Sequence[np.ndarray] = ()) -> tuple[ActivationCache | StackedCaches, ActivationCache]:
    """One pass of the frozen network over every (image, view) each cache needs, at every phase boundary.

    ``train_parts``: consecutive pieces of ``layout.train_ids`` cached (or found) separately, so a
    cache of one piece made by an earlier run is reused (a refit: the evaluated run's training images).
    """
    t = cfg.train
    taps = sorted(set(phase_boundaries(model, cfg)))
    common = dict(
        taps=taps, pp=pp, seed=t.seed, batch_size=t.batch_size, engine=t.engine, device=device, dtype=t.cache_dtype,
        in_memory_gb=t.cache_in_memory_gb, max_pixels=cfg.data.max_pixels, progress=progress, cache_dir=cache_dir,
    )  # fmt: skip
    log.info("caching %d training images x %d views at pieces %s", len(layout.train_ids), len(train_kinds(cfg)), taps)
    parts = [np.asarray(part) for part in train_parts if len(part)] or [layout.train_ids]
    if not np.array_equal(np.concatenate(parts), layout.train_ids):
        raise ValueError("the cache parts must be the training images, in order")
    built = [build_cache(model, model_identity(cfg), ds.subset(part), train_kinds(cfg), ids=part, **common) for part in parts]
    train_acts = built[0] if len(built) == 1 else StackedCaches(built)
    if not len(layout.held_ids):  # a refit holds nothing out
        return train_acts, ActivationCache({}, eval_kinds(cfg), "none")
    eval_acts = build_cache(model, model_identity(cfg), ds.subset(layout.held_ids), eval_kinds(cfg), ids=layout.held_ids, **common)
    return train_acts, eval_acts


def _log_shard(info: DistInfo, train_ids: np.ndarray) -> None:
    if info.enabled:
        shown = json.dumps(sorted(int(i) for i in train_ids)) if len(train_ids) <= 200 else f"sha {hashlib.sha256(np.sort(train_ids).tobytes()).hexdigest()[:12]}"
        log.info("rank %d/%d trains on %d images: %s", info.rank, info.world, len(train_ids), shown)


def prepare(cfg: Config, cache_dir: Path | None, progress: bool = True, ds: MultiLabelDataset | None = None, split: Split | None = None, cache_all_images: bool = False, train_parts: Sequence[np.ndarray] = ()) -> TrainingSetup:
    """Load data, split, build the pretrained model and compute every activation cache once.

    ``train_parts``: see :func:`_build_caches` (ignored under torchrun, where each rank caches its shard).
    """
    set_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device)
    if info.enabled and cache_all_images:
        raise ConfigError("cross-validation (--cv) is not supported under torchrun; run the folds as separate jobs")
    if info.enabled and cfg.train.teacher:
        raise ConfigError("distillation (train.teacher) runs in one process, not under torchrun")
    if cfg.train.teacher and cfg.model.bag:
        raise ConfigError("distillation (train.teacher) into a bag model (model.bag) is not supported: the teacher scores single views")
    ds = ds or load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    split = split or split_dataset(ds.labels, cfg.data.val, cfg.data.test, cfg.train.seed)  # identical on every rank
    model = build_model(cfg.model.backbone, cfg.model.weights, len(ds.classes), cfg.model.head, cfg.model.dropout, head_options=cfg.model.head_options(), bag_pool=cfg.model.bag_pool if cfg.model.bag else "")
    model.freeze_bn = cfg.train.freeze_bn
    pp = model_preprocessing(model, cfg.model.image_size)
    layout = cache_layout(len(ds), split, info, cache_all_images)
    check_trainable(len(layout.train_rows), cfg.train.batch_size)
    _log_shard(info, layout.train_ids)
    if cfg.train.cache:
        parts = () if info.enabled or cache_all_images else train_parts
        train_acts, eval_acts = _build_caches(cfg, model, pp, ds, layout, cache_dir if info.is_main else None, device, progress and info.is_main, parts)  # other ranks keep their shard in memory
    else:  # the fair baseline: same boundaries and views, frozen part recomputed every batch
        rec = dict(pp=pp, seed=cfg.train.seed, max_pixels=cfg.data.max_pixels, device=device)
        train_acts = RecomputedActivations(model, ds.subset(layout.train_ids).paths, layout.train_ids, train_kinds(cfg), **rec)
        eval_acts = RecomputedActivations(model, ds.subset(layout.held_ids).paths, layout.held_ids, eval_kinds(cfg), **rec)
    # channels_last: about 1.5x faster convolutions on this CPU, for training and evaluation alike.
    model.to(device=device, memory_format=torch.channels_last)
    return TrainingSetup(cfg, ds, split, model, pp, train_acts, eval_acts, layout, info, device, GradSync(model, info))
