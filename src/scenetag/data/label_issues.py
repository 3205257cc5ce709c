"""Which given labels are probably wrong: a score for every (image, label) pair from out-of-fold probabilities.

Two rankings, both on probabilities from models that never trained on the image:

- ``margin`` (our baseline): how far the probability lies on the other side of the
  label's tuned threshold, scaled to [-1, 1] (``(p - t) / (1 - t)`` for a label not
  given, ``(t - p) / t`` for a given one); above 0 the model disagrees with the label.
  Thresholds make labels comparable: a sunset at 0.4 can be sure, a tree at 0.4 not.
- ``cleanlab``: cleanlab's per-class label quality (self-confidence, one-vs-rest per
  label), score = 1 - quality; its suspects are the pairs its confident-learning
  filter flags (``find_multilabel_issues_per_class``).

A suspect is ``missing`` (label not given, the image seems to show it) or ``extra``
(label given, the image seems not to show it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

RANKINGS = ("cleanlab", "margin")  # the first is the default: it ranked planted errors at least as well (docs/experiments.md)
SUSPECT_KINDS = ("missing", "extra")
# Per ranking, the default score cut-offs (bench/label_noise.py, docs/experiments.md "Planted label errors"):
# a pair is a *suspect* (listed for review) above the first; its change is *accepted unseen* into
# labels.suggested.csv above the second, where about 8 in 10 changes were right on planted errors.
DEFAULT_CUTOFFS: dict[str, tuple[float, float]] = {"cleanlab": (0.0, 0.9), "margin": (0.5, 0.75)}


def cutoffs(ranking: str, min_score: float | None = None, accept_above: float | None = None) -> tuple[float, float]:
    """(suspect cut-off, accept cut-off) for ``ranking``, each the given value or the ranking's default."""
    if ranking not in DEFAULT_CUTOFFS:
        raise ValueError(f"unknown ranking {ranking!r}; choose from {', '.join(RANKINGS)}")
    suspect, accept = DEFAULT_CUTOFFS[ranking]
    return (suspect if min_score is None else min_score), (accept if accept_above is None else accept_above)


def margin_scores(given: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(images, labels) scores in [-1, 1]: > 0 where the thresholded prediction disagrees with the given label."""
    given, probs = np.asarray(given, dtype=bool), np.asarray(probs, dtype=np.float64)
    t = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.where(given, (t - probs) / t, (probs - t) / (1 - t))


def _label_lists(given: np.ndarray) -> list[list[int]]:
    return [list(np.flatnonzero(row)) for row in np.asarray(given, dtype=bool)]


def cleanlab_scores(given: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(images, labels) scores in [0, 1]: 1 - cleanlab's per-class label quality (self-confidence)."""
    from cleanlab.multilabel_classification.rank import get_label_quality_scores_per_class

    return 1.0 - get_label_quality_scores_per_class(_label_lists(given), np.asarray(probs, dtype=np.float64))


def cleanlab_flags(given: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(images, labels) booleans: the pairs cleanlab's confident-learning filter calls label issues."""
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

    return np.asarray(find_multilabel_issues_per_class(_label_lists(given), np.asarray(probs, dtype=np.float64)), dtype=bool)


def pair_scores(given: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, ranking: str = "margin", min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(scores, suspected) for every (image, label) pair under ``ranking``; higher scores are more suspicious.

    A pair is suspected when the ranking's own rule flags it (margin: the thresholded model disputes
    the label; cleanlab: its confident-learning filter) and its score is above ``min_score``.
    """
    if ranking == "margin":
        scores = margin_scores(given, probs, thresholds)
        return scores, (scores > 0) & (scores > min_score)
    if ranking == "cleanlab":
        scores = cleanlab_scores(given, probs)
        return scores, cleanlab_flags(given, probs) & (scores > min_score)
    raise ValueError(f"unknown ranking {ranking!r}; choose from {', '.join(RANKINGS)}")


def corrected(given: np.ndarray, suspected: np.ndarray) -> np.ndarray:
    """The labels with every suspected pair flipped (a missing label added, an extra one removed)."""
    given = np.asarray(given).astype(np.uint8)
    return np.where(np.asarray(suspected, dtype=bool), 1 - given, given).astype(np.uint8)


@dataclass(frozen=True)
class Suspect:
    """One (image, label) pair whose given value is probably wrong."""

    image: str
    label: str
    kind: str  # missing | extra
    score: float
    given: bool
    probability: float


def suspects(paths: Sequence[str], classes: Sequence[str], given: np.ndarray, probs: np.ndarray, scores: np.ndarray, suspected: np.ndarray) -> list[Suspect]:
    """The suspected pairs, most suspicious first (ties: image order, then label order)."""
    given = np.asarray(given, dtype=bool)
    rows, cols = np.nonzero(suspected)
    order = np.lexsort((cols, rows, -scores[rows, cols]))
    return [
        Suspect(str(paths[i]), classes[j], "extra" if given[i, j] else "missing", float(scores[i, j]), bool(given[i, j]), float(probs[i, j]))
        for i, j in zip(rows[order], cols[order])
    ]
