"""Multi-label metrics (scikit-learn semantics) and per-label threshold tuning."""
from __future__ import annotations

from typing import Sequence

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
    if not lower.size:
        return float(thr[best])
    mid = (thr[best] + lower.max()) / 2
    # With nearly equal scores the midpoint can round onto the lower one: keep the exact score then.
    return float(mid) if lower.max() < mid <= thr[best] else float(thr[best])


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


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE of one label: bin-size-weighted |mean confidence - observed frequency|."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def per_image_bce(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(1)


def load_run_parts(run, parts: Sequence[str] = ("val", "test")) -> dict:
    """The images of a run folder's held-out ``parts`` (``val``/``test``), from its config and split.json (data read once)."""
    import json
    from pathlib import Path

    from .config import load_config
    from .data import DataError, load_dataset

    run = Path(run)
    if not (run / "split.json").is_file():
        raise DataError(f"{run}: not a run folder (no split.json) for its {'/'.join(parts)} part")
    split = json.loads((run / "split.json").read_text())
    missing = [w for w in parts if w not in split]
    if missing:
        raise DataError(f"{run / 'split.json'}: no {missing[0]!r} part (has {sorted(split)})")
    cfg = load_config(run / "config.yaml")
    ds = load_dataset(cfg.data.path, cfg.data.labels, cfg.data.format)
    return {w: ds.subset(split[w]) for w in parts}


def evaluate_checkpoint(model_path, out, data=None, labels=None, fmt: str = "auto", split: str | None = None, fallback: bool = True, progress: bool = True, n_grid: int = 20) -> dict:
    """``scenetag evaluate``: metrics.json, per-label table, pictures and report.html in ``out``.

    ``data`` is a data set in any layout (all of it is evaluated) or, with
    ``split``, a run folder whose held-out ``split`` (test/val) is evaluated.
    """
    from pathlib import Path

    from .data import load_dataset
    from .io import atomic_write_json
    from .predict import Predictor

    out = Path(out)
    model_path = Path(model_path)
    predictor = Predictor(model_path, fallback=fallback)
    if split:
        ds = load_run_parts(Path(data) if data else model_path.parent, [split])[split]
    else:
        ds = load_dataset(data, labels, fmt)
    probs = predictor.dataset_probabilities(ds, progress=progress)
    y = ds.labels.astype(np.uint8)
    m = multilabel_metrics(y, probs, predictor.thresholds, ds.classes, fallback=fallback)
    eces = [expected_calibration_error(y[:, j], probs[:, j]) for j in range(y.shape[1])]
    m["ece"] = {c: e for c, e in zip(ds.classes, eces)}
    m["mean_ece"] = float(np.mean(eces))
    for c, e in zip(ds.classes, eces):
        m["per_label"][c]["ece"] = e
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", m)
    write_evaluation_report(out, ds, y, probs, predictor.thresholds, m, eces, model_path, fallback, n_grid)
    return m


def write_evaluation_report(out, ds, y, probs, thresholds, m, eces, model_path, fallback, n_grid) -> None:
    """Pictures of the results and one report.html that embeds them."""
    import html

    from .data import open_image
    from .explore import _img_tag
    from .io import atomic_write_text
    from .visualisation import (
        plot_confusion_matrices,
        plot_image_grid,
        plot_pr_curves,
        plot_reliability,
        plot_training_curves,
        result_caption,
    )

    classes = list(ds.classes)
    pred = apply_thresholds(probs, thresholds, fallback)

    def grid(indices, path, title):
        imgs, caps = [], []
        for i in indices:
            imgs.append(open_image(ds.paths[i]))
            caps.append(result_caption(ds.paths[i].name, ds.label_names(i), [c for c, v in zip(classes, pred[i]) if v], dict(zip(classes, probs[i]))))
        return plot_image_grid(imgs, caps, path, ncols=5, title=title)

    rng = np.random.default_rng(0)
    sample = sorted(rng.permutation(len(ds))[: min(n_grid, len(ds))].tolist())
    worst = np.argsort(-per_image_bce(y, probs))[: min(15, len(ds))].tolist()
    figs = [
        ("Predictions", "Random images: correct labels green, missed orange, extra red, with probabilities.", grid(sample, out / "predictions.png", "True vs predicted labels")),
        ("Highest loss", "The images the model gets most wrong (largest per-image BCE).", grid(worst, out / "highest_loss.png", "Highest-loss images")),
        ("Confusion per label", "A 2x2 confusion matrix for each label at its threshold.", plot_confusion_matrices(y, pred, classes, out / "confusion.png")),
        ("Precision-recall", "Per label, with the tuned threshold marked.", plot_pr_curves(y, probs, thresholds, classes, out / "pr_curves.png")),
        ("Calibration", "Reliability diagrams and expected calibration error per label.", plot_reliability(y, probs, classes, eces, out / "reliability.png")),
    ]
    run_csv = model_path.parent / "metrics.csv"
    if run_csv.is_file():
        import csv

        rows = list(csv.DictReader(open(run_csv)))
        if rows:
            figs.append(("Training curves", "Loss and validation metrics per epoch of the run.", plot_training_curves(rows, out / "curves.png")))
    keys = ["samples_f1", "micro_f1", "macro_f1", "samples_precision", "micro_precision", "macro_precision", "samples_recall", "micro_recall", "macro_recall", "hamming_loss", "subset_accuracy", "mAP", "bce_loss", "mean_ece"]
    summary = "".join(f"<tr><td>{k}</td><td>{m[k]:.4f}</td></tr>" for k in keys)
    cols = ["precision", "recall", "f1", "ap", "ece", "support", "threshold"]
    per = "".join(
        f"<tr><td>{html.escape(c)}</td>" + "".join(f"<td>{r[k]:.4f}</td>" if isinstance(r[k], float) else f"<td>{r[k]}</td>" for k in cols) + "</tr>"
        for c, r in m["per_label"].items()
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>scenetag evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}img{{max-width:100%;border:1px solid #ddd}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 10px;text-align:left}}</style></head>
<body><h1>Evaluation of {html.escape(model_path.name)}</h1><p>{m['n_images']} images from {html.escape(str(ds.root))}</p>
<h2>Metrics</h2><table>{summary}</table>
<h2>Per label</h2><table><tr><th>label</th>{''.join(f'<th>{k}</th>' for k in cols)}</tr>{per}</table>
{''.join(f'<h2>{html.escape(h)}</h2><p>{html.escape(c)}</p>{_img_tag(p)}' for h, c, p in figs)}</body></html>"""
    atomic_write_text(out / "report.html", body)


def _logit(p: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


def fit_temperatures(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-label temperature T minimising validation BCE of sigmoid(logit(p) / T) (T in [0.05, 20])."""
    from scipy.optimize import minimize_scalar

    temps = np.ones(y.shape[1])
    z = _logit(p)
    for j in range(y.shape[1]):
        if y[:, j].min() == y[:, j].max():
            continue  # one class only: nothing to calibrate against
        res = minimize_scalar(lambda lt: bce_loss(y[:, j], 1 / (1 + np.exp(-z[:, j] / np.exp(lt)))), bounds=(np.log(0.05), np.log(20)), method="bounded")
        temps[j] = float(np.exp(res.x))
    return temps


def apply_temperatures(p: np.ndarray, temps: np.ndarray | None) -> np.ndarray:
    """Calibrated probabilities; ranking per label (and so AP) is unchanged."""
    if temps is None:
        return p
    return 1 / (1 + np.exp(-_logit(p) / np.asarray(temps)))
