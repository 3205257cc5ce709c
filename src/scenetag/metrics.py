"""Pure multi-label metrics (scikit-learn semantics), threshold tuning, calibration.

Arrays in, numbers out: ``y`` is a 0/1 matrix (images x labels) and ``probs``
the matching probabilities. Nothing here reads files or models.
"""
from __future__ import annotations

import importlib

import numpy as np


def _sk():
    """scikit-learn's metrics, imported on first use: a slim install (ONNX prediction) applies thresholds without it."""
    return importlib.import_module("sklearn.metrics")


# The summary metrics of multi-label results, in the order every table, CSV and printout shows them.
METRIC_KEYS = (
    "samples_f1", "micro_f1", "macro_f1",
    "samples_precision", "micro_precision", "macro_precision",
    "samples_recall", "micro_recall", "macro_recall",
    "hamming_loss", "subset_accuracy", "mAP", "bce_loss",
)  # fmt: skip
# What each label's row of the per-label table holds.
PER_LABEL_KEYS = ("precision", "recall", "f1", "ap", "support", "threshold")


def bce_loss(y: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``probs`` against 0/1 ``y``."""
    probs = np.clip(probs, eps, 1 - eps)
    return float(-(y * np.log(probs) + (1 - y) * np.log(1 - probs)).mean())


def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray | float, fallback: bool = True) -> np.ndarray:
    """0/1 predictions; with ``fallback`` an image with nothing above threshold gets its top label."""
    pred = (probs >= np.asarray(thresholds)).astype(np.uint8)
    if fallback and len(pred):
        empty = pred.sum(1) == 0
        pred[empty, probs[empty].argmax(1)] = 1
    return pred


def samples_f1(y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float, fallback: bool = True) -> float:
    """Samples-averaged F1 of the decisions at ``thresholds`` (the summary metric, alone: cheap enough per epoch)."""
    return float(_sk().f1_score(y, apply_thresholds(probs, thresholds, fallback), average="samples", zero_division=0))


def mean_average_precision(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean over labels (that have a positive) of sklearn's average precision."""
    has_pos = y.sum(0) > 0
    if not has_pos.any():
        return float("nan")
    return float(_sk().average_precision_score(y[:, has_pos], probs[:, has_pos], average="macro"))


def multilabel_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray | float = 0.5,
    classes: list[str] | tuple[str, ...] | None = None,
    fallback: bool = True,
) -> dict:
    """Every metric a multi-label user expects, plus a per-label table."""
    y = np.asarray(y).astype(np.uint8)
    probs = np.asarray(probs, dtype=np.float64)
    pred = apply_thresholds(probs, thresholds, fallback)
    kw = {"zero_division": 0}
    out: dict = {}
    for avg in ("samples", "micro", "macro"):
        out[f"{avg}_f1"] = float(_sk().f1_score(y, pred, average=avg, **kw))
        out[f"{avg}_precision"] = float(_sk().precision_score(y, pred, average=avg, **kw))
        out[f"{avg}_recall"] = float(_sk().recall_score(y, pred, average=avg, **kw))
    out["hamming_loss"] = float(_sk().hamming_loss(y, pred))
    out["subset_accuracy"] = float((pred == y).all(1).mean())
    out["mAP"] = mean_average_precision(y, probs)
    out["bce_loss"] = bce_loss(y, probs)
    out["n_images"] = int(len(y))
    classes = list(classes) if classes is not None else [f"class_{i}" for i in range(y.shape[1])]
    th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (y.shape[1],))
    per = {}
    prec = _sk().precision_score(y, pred, average=None, **kw)
    rec = _sk().recall_score(y, pred, average=None, **kw)
    f1 = _sk().f1_score(y, pred, average=None, **kw)
    for j, c in enumerate(classes):
        ap = float(_sk().average_precision_score(y[:, j], probs[:, j])) if y[:, j].any() else float("nan")
        per[c] = {
            "precision": float(prec[j]),
            "recall": float(rec[j]),
            "f1": float(f1[j]),
            "ap": ap,
            "support": int(y[:, j].sum()),
            "threshold": float(th[j]),
        }
    out["per_label"] = per
    return out


def errors_by_kind(y: np.ndarray, pred: np.ndarray, classes) -> dict[str, dict[str, int]]:
    """Per label: ``missed`` (given, not predicted) and ``extra`` (predicted, not given) image counts."""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    return {c: {"missed": int((y[:, j] & ~pred[:, j]).sum()), "extra": int((~y[:, j] & pred[:, j]).sum())} for j, c in enumerate(classes)}


def cross_label_confusion(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(labels x labels) image counts: row X, column Y = images labelled X that were tagged Y.

    The diagonal is each label's true positives; off the diagonal only images *not* labelled Y
    count (a sunset tagged sea that shows no sea), so a row says what a true X gets mistaken for.
    """
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    counts = (y.T.astype(np.int64) @ (pred & ~y).astype(np.int64))  # off-diagonal: extra Y on images of X
    np.fill_diagonal(counts, (y & pred).sum(0))
    return counts


def _best_f1_threshold(y: np.ndarray, probs: np.ndarray) -> float:
    """Threshold maximising one label's F1 (midpoint between neighbouring scores)."""
    if y.sum() == 0:
        return 0.5
    prec, rec, thr = _sk().precision_recall_curve(y, probs)
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    best = int(np.argmax(f1))
    # Midpoint to the next lower score generalises better than the exact score.
    lower = probs[probs < thr[best]]
    if not lower.size:
        return float(thr[best])
    mid = (thr[best] + lower.max()) / 2
    # With nearly equal scores the midpoint can round onto the lower one: keep the exact score then.
    return float(mid) if lower.max() < mid <= thr[best] else float(thr[best])


def tune_thresholds(y: np.ndarray, probs: np.ndarray, mode: str = "per_label", fallback: bool = True) -> np.ndarray:
    """Per-label thresholds chosen on validation data.

    ``per_label`` maximises each label's F1; ``joint`` then refines them by
    coordinate ascent on samples-F1; ``fixed`` returns 0.5 everywhere.
    """
    y = np.asarray(y).astype(np.uint8)
    n_labels = y.shape[1]
    if mode == "fixed" or len(y) == 0:
        return np.full(n_labels, 0.5)
    th = np.array([_best_f1_threshold(y[:, j], probs[:, j]) for j in range(n_labels)])
    if mode == "per_label":
        return th
    if mode != "joint":
        raise ValueError(f"unknown threshold mode {mode!r}")
    grid = np.linspace(0.05, 0.95, 19)
    best = samples_f1(y, probs, th, fallback)
    for _ in range(3):
        for j in range(n_labels):
            for t in grid:
                trial = th.copy()
                trial[j] = t
                s = samples_f1(y, probs, trial, fallback)
                if s > best + 1e-12:
                    best, th = s, trial
    return th


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE of one label: bin-size-weighted |mean confidence - observed frequency|."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(probs[m].mean() - y[m].mean())
    return float(ece)


def per_image_bce(y: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    probs = np.clip(probs, eps, 1 - eps)
    return -(y * np.log(probs) + (1 - y) * np.log(1 - probs)).mean(1)


def _logit(probs: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    probs = np.clip(probs, eps, 1 - eps)
    return np.log(probs / (1 - probs))


def fit_temperatures(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-label temperature T minimising validation BCE of sigmoid(logit(probs) / T) (T in [0.05, 20])."""
    from scipy.optimize import minimize_scalar

    temps = np.ones(y.shape[1])
    z = _logit(probs)
    for j in range(y.shape[1]):
        if y[:, j].min() == y[:, j].max():
            continue  # one class only: nothing to calibrate against
        res = minimize_scalar(lambda lt: bce_loss(y[:, j], 1 / (1 + np.exp(-z[:, j] / np.exp(lt)))), bounds=(np.log(0.05), np.log(20)), method="bounded")
        temps[j] = float(np.exp(res.x))
    return temps


def apply_temperatures(probs: np.ndarray, temps: np.ndarray | None) -> np.ndarray:
    """Calibrated probabilities; ranking per label (and so AP) is unchanged."""
    if temps is None:
        return probs
    return 1 / (1 + np.exp(-_logit(probs) / np.asarray(temps)))
