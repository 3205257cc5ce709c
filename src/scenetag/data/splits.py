"""Seeded, stratified train/val/test splits and K folds for multi-label data.

The default data's file order is grouped by class, so every split is
stratified (iterative stratification, ``iterative-stratification``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Indices of a train/val/test split into a data set."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).tolist() for k in PARTS}

    @classmethod
    def from_dict(cls, d: dict, where: str = "split") -> "Split":
        missing = [k for k in PARTS if k not in d]
        if missing:
            raise DataError(f"{where}: no {missing[0]!r} part (has {sorted(d)})")
        return cls(*(np.asarray(d[k], dtype=np.int64) for k in PARTS))

    @classmethod
    def read(cls, path: Path) -> "Split":
        """The split a run folder recorded (``split.json``)."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()), str(path))
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{path}: not a readable split file ({e})") from None


def stratified_holdout(y: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Iterative stratification: (rest, held) with ``held`` about ``frac`` of the rows (none for ``frac`` 0)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    if frac <= 0:
        return np.arange(len(y)), np.array([], dtype=np.int64)

    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=frac, random_state=seed)
    rest, held = next(splitter.split(np.zeros(len(y)), y))
    return np.sort(rest), np.sort(held)


def val_fraction_of_rest(val: float, test: float) -> float:
    """``data.val`` is a fraction of the whole data set; carved out of what the test part leaves."""
    return val / max(1 - test, 1e-9)


def split_dataset(labels: np.ndarray, val: float = 0.15, test: float = 0.15, seed: int = 0) -> Split:
    """Reproducible multi-label stratified train/val/test split (fractions of the whole)."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"split fractions val={val}, test={test} must be in [0, 1) with val + test < 1")
    try:
        rest, test_idx = stratified_holdout(labels, test, seed)
        tr, va = stratified_holdout(labels[rest], val_fraction_of_rest(val, test), seed + 1)
    except ValueError as e:  # scikit-learn: too few images for the requested parts
        raise DataError(f"{len(labels)} image(s) are too few for a split with data.val={val} and data.test={test} ({e}); add images or set data.val=0 / data.test=0") from None
    return Split(rest[tr], rest[va], test_idx)


def kfold_indices(labels: np.ndarray, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Multi-label stratified K-fold: a list of (train, held-out) index pairs."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if k < 2 or k > len(labels):
        raise DataError(f"k-fold needs 2 <= k <= n_images, got k={k} for {len(labels)} images")
    kf = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in kf.split(np.zeros(len(labels)), labels)]



def kfold_splits(labels: np.ndarray, k: int, seed: int, val: float, test: float) -> list[Split]:
    """K folds as train/val/test splits: fold i tests on its held-out part; val is carved out of the rest."""
    splits = []
    for i, (rest, held) in enumerate(kfold_indices(labels, k, seed)):
        tr, va = stratified_holdout(labels[rest], val_fraction_of_rest(val, test), seed + i)
        splits.append(Split(rest[tr], rest[va], held))
    return splits
