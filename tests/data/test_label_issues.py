"""Scoring (image, label) pairs for suspected label errors."""
from __future__ import annotations

import numpy as np
import pytest

from scenetag.data.label_issues import RANKINGS, corrected, margin_scores, pair_scores, suspects


def _planted(seed: int = 0, n: int = 300, classes: int = 4):
    """Probabilities of a decent model of the true labels, and given labels with a few flipped pairs."""
    rng = np.random.default_rng(seed)
    true = rng.random((n, classes)) < 0.3
    probs = np.clip(np.where(true, 0.8, 0.15) + rng.normal(0, 0.12, (n, classes)), 0.001, 0.999)
    flipped = np.zeros_like(true)
    flipped[rng.choice(n, 15, replace=False), rng.integers(0, classes, 15)] = True
    return true ^ flipped, probs, flipped


def test_margin_score_is_the_distance_past_the_threshold_on_the_labels_scale():
    given = np.array([[1, 0], [1, 0]], dtype=bool)
    probs = np.array([[0.1, 0.9], [0.5, 0.2]])
    scores = margin_scores(given, probs, np.array([0.4, 0.6]))
    np.testing.assert_allclose(scores, [[0.75, 0.75], [-0.25, -1.0]])  # (t - p) / t given, (p - t) / (1 - t) not given


@pytest.mark.parametrize("ranking", RANKINGS)
def test_planted_label_errors_rank_first(ranking):
    given, probs, flipped = _planted()
    scores, suspected = pair_scores(given, probs, np.full(4, 0.5), ranking)
    top = np.argsort(-scores, axis=None)[: flipped.sum()]
    assert flipped.ravel()[top].mean() >= 0.8  # precision at N (N = planted)
    assert suspected[flipped].mean() >= 0.8 and suspected.sum() < 3 * flipped.sum()


def test_suspects_are_sorted_and_say_what_to_change():
    given = np.array([[1, 0], [0, 0], [1, 1]], dtype=bool)
    probs = np.array([[0.1, 0.2], [0.3, 0.95], [0.9, 0.3]])
    scores, suspected = pair_scores(given, probs, np.array([0.5, 0.5]))
    found = suspects(["a.jpg", "b.jpg", "c.jpg"], ["sea", "trees"], given, probs, scores, suspected)
    assert [(s.image, s.label, s.kind) for s in found] == [("b.jpg", "trees", "missing"), ("a.jpg", "sea", "extra"), ("c.jpg", "trees", "extra")]
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)
    assert found[0].given is False and found[0].probability == pytest.approx(0.95)
    with pytest.raises(ValueError, match="unknown ranking"):
        pair_scores(given, probs, np.array([0.5, 0.5]), "magic")


@pytest.mark.parametrize("ranking", RANKINGS)
def test_a_higher_cut_off_keeps_the_most_suspicious_subset(ranking):
    given, probs, _ = _planted(seed=1)
    scores, every = pair_scores(given, probs, np.full(4, 0.5), ranking)
    cut = float(np.median(scores[every]))
    _, fewer = pair_scores(given, probs, np.full(4, 0.5), ranking, min_score=cut)
    assert 0 < fewer.sum() < every.sum() and (scores[fewer] > cut).all()
    np.testing.assert_array_equal(fewer, every & (scores > cut))


def test_correcting_flips_exactly_the_suspected_pairs():
    given, probs, flipped = _planted(seed=2)
    fixed = corrected(given, flipped)
    assert fixed.dtype == np.uint8 and ((fixed != given) == flipped).all()
    np.testing.assert_array_equal(corrected(fixed, flipped), given)  # flipping twice gives the labels back
