"""Stratified K-fold cross-validation of the recipe: every metric as mean and std over folds."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, config_diff, load_config, with_absolute_paths
from ..data.layouts import load_dataset
from ..data.splits import Split, kfold_splits
from ..errors import ConfigError
from ..io import atomic_write_json
from ..infer.outputs import read_label_columns
from ..metrics import METRIC_KEYS, errors_by_kind
from ..runs import RunDir, locked
from .recipe import train

log = logging.getLogger(__name__)


def summarise_folds(k: int, per_fold: list[dict[str, Any]], classes: list[str] | None = None) -> dict[str, Any]:
    """``cv.json``: each fold's test metrics, their mean and (population) std, the training times and
    (given the classes) the errors by kind summed over the test folds, read from their test_predictions.csv."""
    tests = [r["metrics"]["test"] for r in per_fold]
    summary = {
        "k": k,
        "folds": [{key: t[key] for key in METRIC_KEYS} for t in tests],
        "mean": {key: float(np.mean([t[key] for t in tests])) for key in METRIC_KEYS},
        "std": {key: float(np.std([t[key] for t in tests])) for key in METRIC_KEYS},
        "seconds": [r.get("train_seconds") for r in per_fold],
    }
    if classes is not None:
        summary["errors_by_kind"] = summed_errors_by_kind([RunDir(r["run_dir"]) for r in per_fold], classes)
    return summary


def summed_errors_by_kind(folds: list[RunDir], classes: list[str]) -> dict[str, dict[str, int]]:
    """Missed / extra images per label over every fold's test part (each image is in one test part)."""
    marks = [read_label_columns(fold.test_predictions, classes) for fold in folds]
    return errors_by_kind(np.concatenate([true for true, _ in marks]), np.concatenate([pred for _, pred in marks]), classes)


def cross_validate(cfg: Config, out: Path | str, k: int = 5, progress: bool = True) -> dict[str, Any]:
    """Each fold trains on K-1 parts (val carved out of them) and tests on the rest.

    All folds share one activation cache of every image. A fold already finished is reused.
    """
    out = RunDir(out)
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    cfg = with_absolute_paths(cfg)
    if not cfg.train.cache_dir:
        cfg.train.cache_dir = str(out.cache.absolute())
    per_fold = []
    with locked(out):
        for i, split in enumerate(kfold_splits(ds.labels, k, cfg.train.seed, cfg.data.val, cfg.data.test)):
            per_fold.append(_fold(cfg, out, i, k, split, progress))
    summary = summarise_folds(k, per_fold, list(ds.classes))
    atomic_write_json(out.cv_summary, summary)
    return summary


def check_finished_fold(fold: RunDir, cfg: Config, split: Split) -> None:
    """A finished fold is reused only if it is this experiment's: same config (cache folder aside) and same split."""
    differ = [key for key in config_diff(load_config(fold.config), cfg) if key != "train.cache_dir"]
    if differ:
        raise ConfigError(f"{fold} holds a finished fold of another experiment ({', '.join(differ)} differ); use another --out or remove it")
    if Split.read(fold.split).as_dict() != split.as_dict():
        raise ConfigError(f"{fold} holds a finished fold with another split (other data, K or seed); use another --out or remove it")


def _fold(cfg: Config, out: RunDir, i: int, k: int, split: Split, progress: bool) -> dict[str, Any]:
    """Fold ``i`` of ``k``: reused when finished (and this experiment's), else trained (again)."""
    fold = out.fold(i)
    if fold.is_finished():
        check_finished_fold(fold, cfg, split)
        return json.loads(fold.result.read_text())
    if fold.is_started():
        shutil.rmtree(fold.path)  # an interrupted fold starts again (its cache, shared, is kept)
    log.info("fold %d/%d: %d train, %d val, %d test", i + 1, k, len(split.train), len(split.val), len(split.test))
    return train(cfg, fold.path, progress=progress, split=split, cache_all_images=True)
