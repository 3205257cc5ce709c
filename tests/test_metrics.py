from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, hamming_loss, precision_score, recall_score

from scenetag.metrics import apply_thresholds, multilabel_metrics, tune_thresholds


def test_metrics_equal_sklearn_on_random_inputs():
    rng = np.random.default_rng(0)
    y = (rng.random((50, 4)) < 0.3).astype(int)
    y[y.sum(1) == 0, 0] = 1
    p = rng.random((50, 4))
    th = np.array([0.3, 0.5, 0.6, 0.4])
    m = multilabel_metrics(y, p, th, fallback=False)
    pred = (p >= th).astype(int)
    for avg in ("samples", "micro", "macro"):
        assert m[f"{avg}_f1"] == pytest.approx(f1_score(y, pred, average=avg, zero_division=0))
        assert m[f"{avg}_precision"] == pytest.approx(precision_score(y, pred, average=avg, zero_division=0))
        assert m[f"{avg}_recall"] == pytest.approx(recall_score(y, pred, average=avg, zero_division=0))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, pred))
    assert m["subset_accuracy"] == pytest.approx((pred == y).all(1).mean())
    assert m["mAP"] == pytest.approx(np.mean([average_precision_score(y[:, j], p[:, j]) for j in range(4)]))
    assert m["per_label"]["class_2"]["threshold"] == 0.6
    assert m["per_label"]["class_1"]["support"] == y[:, 1].sum()


def test_fallback_gives_every_image_its_top_label():
    p = np.array([[0.1, 0.3, 0.2], [0.9, 0.1, 0.8]])
    np.testing.assert_array_equal(apply_thresholds(p, 0.5), [[0, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(apply_thresholds(p, 0.5, fallback=False), [[0, 0, 0], [1, 0, 1]])


def test_threshold_tuning_finds_f1_optimum():
    # Label 0: positives score 0.3-0.4, negatives 0.1-0.2 -> any threshold in (0.2, 0.3] is perfect; 0.5 is not.
    y = np.array([[1], [1], [1], [0], [0], [0]])
    p = np.array([[0.3], [0.35], [0.4], [0.1], [0.15], [0.2]])
    th = tune_thresholds(y, p, "per_label")
    assert 0.2 < th[0] <= 0.3
    assert f1_score(y[:, 0], p[:, 0] >= th[0]) == 1.0
    # Brute force over every candidate agrees on the best achievable F1.
    rng = np.random.default_rng(1)
    y = (rng.random((80, 3)) < 0.4).astype(int)
    p = np.clip(y * 0.3 + rng.random((80, 3)) * 0.7, 0, 1)
    th = tune_thresholds(y, p, "per_label")
    for j in range(3):
        best = max(f1_score(y[:, j], p[:, j] >= t, zero_division=0) for t in np.unique(p[:, j]))
        assert f1_score(y[:, j], p[:, j] >= th[j], zero_division=0) == pytest.approx(best)


def test_joint_mode_not_worse_and_fixed_mode():
    rng = np.random.default_rng(2)
    y = (rng.random((60, 3)) < 0.4).astype(int)
    p = np.clip(y * 0.3 + rng.random((60, 3)) * 0.7, 0, 1)
    per = tune_thresholds(y, p, "per_label")
    joint = tune_thresholds(y, p, "joint")
    s = lambda t: f1_score(y, apply_thresholds(p, t), average="samples", zero_division=0)
    assert s(joint) >= s(per)
    assert list(tune_thresholds(y, p, "fixed")) == [0.5, 0.5, 0.5]


def test_calibration_error_of_calibrated_input_is_small():
    from scenetag.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(int)  # outcomes drawn with exactly probability p
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p + 0.3, 0, 1)) > 0.2


def test_temperature_scaling_fixes_overconfidence():
    from scenetag.metrics import apply_temperatures, expected_calibration_error, fit_temperatures

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(4000, 2))
    y = (rng.random((4000, 2)) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated at T = 1
    over = 1 / (1 + np.exp(-3 * z))  # three times too confident
    temps = fit_temperatures(y, over)
    np.testing.assert_allclose(temps, [3, 3], rtol=0.15)
    cal = apply_temperatures(over, temps)
    for j in range(2):
        assert expected_calibration_error(y[:, j], cal[:, j]) < expected_calibration_error(y[:, j], over[:, j]) / 2
    m = (over[:, 0] > 1e-9) & (over[:, 0] < 1 - 1e-9)  # away from float saturation
    assert np.array_equal(np.argsort(cal[m, 0]), np.argsort(over[m, 0]))  # ranking kept


def test_errors_by_kind_count_missed_and_extra_labels():
    from scenetag.metrics import errors_by_kind

    y = np.array([[1, 0], [1, 1], [0, 0]])
    pred = np.array([[0, 1], [1, 1], [1, 0]])
    assert errors_by_kind(y, pred, ["a", "b"]) == {"a": {"missed": 1, "extra": 1}, "b": {"missed": 0, "extra": 1}}


def test_cross_label_confusion_counts_what_each_true_label_is_mistaken_for():
    from scenetag.metrics import cross_label_confusion

    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    pred = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 0], [0, 0, 1]])
    counts = cross_label_confusion(y, pred)
    # row 0 (3 images of label 0): 2 tagged 0; image 0 tagged 1 without being 1 (image 1 is 1: not counted); images 1 and 3 tagged 2
    np.testing.assert_array_equal(counts, [[2, 1, 2], [0, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(np.diag(counts), ((y == 1) & (pred == 1)).sum(0))
