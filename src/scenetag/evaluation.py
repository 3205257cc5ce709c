"""Multi-label metrics (scikit-learn semantics) and per-label threshold tuning."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
)


def bce_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``p`` against 0/1 ``y``."""
    p = np.clip(p, eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def apply_thresholds(p: np.ndarray, thresholds: np.ndarray | float, fallback: bool = True) -> np.ndarray:
    """0/1 predictions; with ``fallback`` an image with nothing above threshold gets its top label."""
    pred = (p >= np.asarray(thresholds)).astype(np.uint8)
    if fallback and len(pred):
        empty = pred.sum(1) == 0
        pred[empty, p[empty].argmax(1)] = 1
    return pred


def mean_average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over labels (that have a positive) of sklearn's average precision."""
    has_pos = y.sum(0) > 0
    if not has_pos.any():
        return float("nan")
    return float(average_precision_score(y[:, has_pos], p[:, has_pos], average="macro"))


def multilabel_metrics(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: np.ndarray | float = 0.5,
    classes: list[str] | tuple[str, ...] | None = None,
    fallback: bool = True,
) -> dict:
    """Every metric a multi-label user expects, plus a per-label table."""
    y = np.asarray(y).astype(np.uint8)
    p = np.asarray(p, dtype=np.float64)
    pred = apply_thresholds(p, thresholds, fallback)
    kw = {"zero_division": 0}
    out: dict = {}
    for avg in ("samples", "micro", "macro"):
        out[f"{avg}_f1"] = float(f1_score(y, pred, average=avg, **kw))
        out[f"{avg}_precision"] = float(precision_score(y, pred, average=avg, **kw))
        out[f"{avg}_recall"] = float(recall_score(y, pred, average=avg, **kw))
    out["hamming_loss"] = float(hamming_loss(y, pred))
    out["subset_accuracy"] = float((pred == y).all(1).mean())
    out["mAP"] = mean_average_precision(y, p)
    out["bce_loss"] = bce_loss(y, p)
    out["n_images"] = int(len(y))
    classes = list(classes) if classes is not None else [f"class_{i}" for i in range(y.shape[1])]
    th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (y.shape[1],))
    per = {}
    prec = precision_score(y, pred, average=None, **kw)
    rec = recall_score(y, pred, average=None, **kw)
    f1 = f1_score(y, pred, average=None, **kw)
    for j, c in enumerate(classes):
        ap = float(average_precision_score(y[:, j], p[:, j])) if y[:, j].any() else float("nan")
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


def _best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Threshold maximising one label's F1 (midpoint between neighbouring scores)."""
    if y.sum() == 0:
        return 0.5
    prec, rec, thr = precision_recall_curve(y, p)
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    best = int(np.argmax(f1))
    # Midpoint to the next lower score generalises better than the exact score.
    lower = p[p < thr[best]]
    return float((thr[best] + lower.max()) / 2) if lower.size else float(thr[best])


def tune_thresholds(y: np.ndarray, p: np.ndarray, mode: str = "per_label", fallback: bool = True) -> np.ndarray:
    """Per-label thresholds chosen on validation data.

    ``per_label`` maximises each label's F1; ``joint`` then refines them by
    coordinate ascent on samples-F1; ``fixed`` returns 0.5 everywhere.
    """
    y = np.asarray(y).astype(np.uint8)
    n_labels = y.shape[1]
    if mode == "fixed" or len(y) == 0:
        return np.full(n_labels, 0.5)
    th = np.array([_best_f1_threshold(y[:, j], p[:, j]) for j in range(n_labels)])
    if mode == "per_label":
        return th
    if mode != "joint":
        raise ValueError(f"unknown threshold mode {mode!r}")
    grid = np.linspace(0.05, 0.95, 19)
    best = f1_score(y, apply_thresholds(p, th, fallback), average="samples", zero_division=0)
    for _ in range(3):
        for j in range(n_labels):
            for t in grid:
                trial = th.copy()
                trial[j] = t
                s = f1_score(y, apply_thresholds(p, trial, fallback), average="samples", zero_division=0)
                if s > best + 1e-12:
                    best, th = s, trial
    return th
