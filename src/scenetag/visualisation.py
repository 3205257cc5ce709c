"""Pictures a person looks at: label statistics, heatmaps, image grids with labels.

Every function takes data and an output path and returns the path; files are
written atomically (see :func:`scenetag.plotting.save_figure`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .plotting import plt, save_figure

Caption = Sequence[tuple[str, str]]  # (text, colour) segments, drawn one per line


def plot_label_distribution(classes: Sequence[str], counts: Sequence[int], n_images: int, path: Path) -> Path:
    """Bar chart of positives per class, annotated with count and share of images."""
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(range(len(classes)), counts, color="tab:blue", tick_label=list(classes))
    for b, c in zip(bars, counts):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{c}\n{c / n_images:.1%}", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("images with label")
    ax.set_title(f"Label distribution ({n_images} images)")
    ax.set_ylim(0, max(counts) * 1.25 if len(counts) else 1)
    return save_figure(fig, path)


def plot_labels_per_image(hist: dict[str, int], path: Path) -> Path:
    """Histogram of how many labels each image has."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    keys = [int(k) for k in hist]
    vals = list(hist.values())
    bars = ax.bar(keys, vals, color="tab:green")
    ax.set_xticks(keys)
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), str(v), ha="center", va="bottom", fontsize=9)
    ax.set_xlabel("labels per image")
    ax.set_ylabel("images")
    ax.set_title("Labels per image")
    return save_figure(fig, path)


def plot_combinations(combos: dict[str, int], path: Path) -> Path:
    """Horizontal bars: count of every label combination, most frequent on top."""
    items = sorted(combos.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:purple")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("images")
    ax.set_title("Label combinations")
    ax.tick_params(axis="y", labelsize=8)
    return save_figure(fig, path)


def plot_heatmap(matrix: np.ndarray, labels: Sequence[str], title: str, path: Path, fmt: str = ".2f", cmap: str = "viridis", xlabel: str = "", ylabel: str = "", vmin: float | None = None, vmax: float | None = None) -> Path:
    """Annotated square heatmap (class x class)."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2, 1.0 * n + 1.5))
    im = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n), labels, rotation=30, ha="right")
    ax.set_yticks(range(n), labels)
    lo, hi = np.nanmin(matrix), np.nanmax(matrix)
    mid = (lo + hi) / 2
    for i in range(n):
        for j in range(n):
            v = matrix[i, j]
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=9, color="white" if v < mid else "black")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path)


def plot_image_sizes(sizes: np.ndarray, path: Path) -> Path:
    """Scatter of width vs height and a histogram of aspect ratios."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    w, h = sizes[:, 0], sizes[:, 1]
    a1.scatter(w, h, s=8, alpha=0.3)
    a1.set_xlabel("width (px)")
    a1.set_ylabel("height (px)")
    a1.set_title("Image sizes")
    a2.hist(w / h, bins=30, color="tab:orange")
    a2.set_xlabel("aspect ratio (width / height)")
    a2.set_ylabel("images")
    a2.set_title("Aspect ratios")
    return save_figure(fig, path)


def plot_image_grid(images: Sequence[Image.Image], captions: Sequence[str | Caption], path: Path, ncols: int = 5, title: str = "", thumb: int = 160) -> Path:
    """Thumbnails in a grid, each with its caption below (plain text or coloured segments)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    max_lines = max((1 if isinstance(c, str) else len(c)) for c in captions) if captions else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, (2.0 + 0.22 * max_lines) * nrows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions):
        im = img.copy()
        im.thumbnail((thumb, thumb))
        ax.imshow(im)
        segs = [(cap, "black")] if isinstance(cap, str) else list(cap)
        for i, (text, colour) in enumerate(segs):
            ax.annotate(text, xy=(0.5, 0), xycoords="axes fraction", xytext=(0, -3 - 10 * i), textcoords="offset points", ha="center", va="top", fontsize=8, color=colour)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training_curves(rows: list[dict], path: Path) -> Path:
    """Train/val loss and val F1/mAP per epoch over all phases, phase starts marked."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, len(rows) + 1)
    a1.plot(x, [float(r["train_loss"]) for r in rows], label="train loss")
    a1.plot(x, [float(r["val_loss"]) for r in rows], label="val loss")
    for key in ("val_samples_f1", "val_micro_f1", "val_mAP"):
        a2.plot(x, [float(r[key]) for r in rows], label=key)
    phases = [r["phase"] for r in rows]
    for ax in (a1, a2):
        for i, ph in enumerate(phases):
            if i == 0 or phases[i - 1] != ph:
                ax.axvline(i + 0.5, color="grey", lw=0.8, ls=":")
                ax.text(i + 0.6, 0.98, ph, transform=ax.get_xaxis_transform(), va="top", fontsize=7, color="grey")
        ax.set_xlabel("epoch (all phases)")
        ax.legend(fontsize=8)
    a1.set_title("loss")
    a2.set_title("validation metrics (threshold 0.5)")
    return save_figure(fig, path)


def plot_confusion_matrices(y: np.ndarray, pred: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """One 2x2 confusion matrix per label (rows: true no/yes, columns: predicted no/yes)."""
    n = len(classes)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), squeeze=False)
    for j, (ax, c) in enumerate(zip(axes[0], classes)):
        m = np.array([[((y[:, j] == a) & (pred[:, j] == b)).sum() for b in (0, 1)] for a in (0, 1)])
        ax.imshow(m, cmap="Blues")
        for a in (0, 1):
            for b in (0, 1):
                ax.text(b, a, str(m[a, b]), ha="center", va="center", color="white" if m[a, b] > m.max() / 2 else "black")
        ax.set_xticks([0, 1], ["no", "yes"])
        ax.set_yticks([0, 1], ["no", "yes"])
        ax.set_xlabel("predicted")
        if j == 0:
            ax.set_ylabel("true")
        ax.set_title(c)
    return save_figure(fig, path)


def plot_pr_curves(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float], classes: Sequence[str], path: Path) -> Path:
    """Precision-recall curve per label with the chosen threshold marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for j, c in enumerate(classes):
        if not y[:, j].any():
            continue
        prec, rec, thr = precision_recall_curve(y[:, j], p[:, j])
        line = ax.plot(rec, prec, label=f"{c} (AP {average_precision_score(y[:, j], p[:, j]):.3f})")[0]
        pred = p[:, j] >= thresholds[j]
        tp = (pred & (y[:, j] == 1)).sum()
        ax.plot(tp / max(y[:, j].sum(), 1), tp / max(pred.sum(), 1), "o", color=line.get_color(), ms=7, mec="black")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall per label (dot: chosen threshold)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, path)


def plot_reliability(y: np.ndarray, p: np.ndarray, classes: Sequence[str], eces: Sequence[float], path: Path, bins: int = 10) -> Path:
    """Reliability diagram per label: mean predicted probability vs observed frequency."""
    n = len(classes)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 3.0), squeeze=False)
    edges = np.linspace(0, 1, bins + 1)
    for j, (ax, c) in enumerate(zip(axes[0], classes)):
        idx = np.clip(np.digitize(p[:, j], edges[1:-1]), 0, bins - 1)
        conf = [p[idx == b, j].mean() if (idx == b).any() else np.nan for b in range(bins)]
        freq = [y[idx == b, j].mean() if (idx == b).any() else np.nan for b in range(bins)]
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.plot(conf, freq, "o-")
        ax.set_title(f"{c}\nECE {eces[j]:.3f}", fontsize=9)
        ax.set_xlabel("predicted")
        if j == 0:
            ax.set_ylabel("observed")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    return save_figure(fig, path)


def result_caption(name: str, true: Sequence[str], pred: Sequence[str], probs: dict[str, float]) -> list[tuple[str, str]]:
    """Caption segments: correct labels green, missed orange, extra red."""
    segs = [(name, "dimgray")]
    for c in sorted(set(true) | set(pred), key=lambda c: -probs.get(c, 0)):
        p = probs.get(c, 0.0)
        if c in true and c in pred:
            segs.append((f"✓ {c} {p:.2f}", "green"))
        elif c in true:
            segs.append((f"missed {c} {p:.2f}", "darkorange"))
        else:
            segs.append((f"extra {c} {p:.2f}", "red"))
    return segs
