"""Pictures a person looks at: label statistics, heatmaps, image grids with labels.

Every ``plot_*`` function takes data and an output path, writes one PNG
atomically (:func:`save_figure`: temp file, ``format="png"``, then rename),
closes the figure and returns the path. This is the only module that imports
matplotlib, and it selects the headless backend before pyplot loads.
"""
from __future__ import annotations

import io
import textwrap
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers, in CI or under the service
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ..io import atomic_save  # noqa: E402

def save_figure(fig, path: Path | str, dpi: int = 100) -> Path:
    """Save ``fig`` as PNG via a temp file (matplotlib cannot infer the format from ``.tmp``) and close it."""
    atomic_save(path, lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)


Caption = Sequence[tuple[str, str]]  # (text, colour) segments, drawn one per line

_CAPTION_PT = 10  # vertical step between caption lines, in points (font size 8)


def _text_colour(rgba: Sequence[float]) -> str:
    """Black or white, whichever reads better on a cell of colour ``rgba``."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def plot_label_distribution(classes: Sequence[str], counts: Sequence[int], path: Path, n_images: int | None = None) -> Path:
    """Bar chart of positives per class, each bar annotated with its count and share.

    The share is of ``n_images`` (images carrying the label); without it, of the
    total of ``counts``.
    """
    counts = [int(c) for c in counts]
    total = n_images if n_images else max(sum(counts), 1)
    n = len(classes)
    rotate = n > 8 or max((len(c) for c in classes), default=0) > 12
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.7 * n + 2), 20.0), 4.2))
    bars = ax.bar(range(n), counts, color="tab:blue")
    ax.set_xticks(range(n), list(classes), rotation=45 if rotate else 0, ha="right" if rotate else "center", fontsize=10 if n <= 30 else 6)
    small = n > 12
    for b, c in zip(bars, counts):
        label = f"{c} ({c / total:.0%})" if small else f"{c}\n{c / total:.1%}"
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), label, ha="center", va="bottom", fontsize=7 if small else 9, rotation=90 if small else 0)
    ax.set_ylabel("images with label" if n_images else "labels")
    ax.set_title(f"Label distribution ({n_images} images)" if n_images else "Label distribution")
    ax.set_ylim(0, max(counts, default=0) * (1.35 if small else 1.22) or 1)
    ax.spines[["top", "right"]].set_visible(False)
    return save_figure(fig, path)


def plot_labels_per_image(hist: Mapping[str | int, int], path: Path) -> Path:
    """Histogram of how many labels each image has, bars annotated with count and share."""
    keys = [int(k) for k in hist]
    vals = [int(v) for v in hist.values()]
    total = max(sum(vals), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(keys) + 2), 3.6))
    bars = ax.bar(keys, vals, color="tab:green")
    ax.set_xticks(keys)
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v}\n{v / total:.1%}", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, max(vals, default=0) * 1.25 or 1)
    ax.set_xlabel("labels per image")
    ax.set_ylabel("images")
    ax.set_title("Labels per image")
    ax.spines[["top", "right"]].set_visible(False)
    return save_figure(fig, path)


def plot_combinations(combos: Mapping[str, int], path: Path, max_items: int = 30) -> Path:
    """Horizontal bars: count of every label combination, most frequent on top.

    Beyond ``max_items`` combinations the rarest are pooled into one "other" bar.
    """
    items = sorted(combos.items(), key=lambda kv: (-kv[1], kv[0]))
    total = max(sum(v for _, v in items), 1)
    if len(items) > max_items:
        rest = items[max_items - 1 :]
        items = items[: max_items - 1] + [(f"other ({len(rest)} combinations)", sum(v for _, v in rest))]
    items = items[::-1]  # barh draws bottom-up
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(items) + 1.3))
    ax.barh(range(len(items)), [v for _, v in items], color="tab:purple")
    ax.set_yticks(range(len(items)), [k for k, _ in items], fontsize=8)
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v} ({v / total:.1%})", va="center", fontsize=8)
    ax.set_xlim(0, max((v for _, v in items), default=0) * 1.22 or 1)
    ax.set_ylim(-0.6, len(items) - 0.4)
    ax.set_xlabel("images")
    ax.set_title("Label combinations")
    ax.spines[["top", "right"]].set_visible(False)
    return save_figure(fig, path)


def plot_heatmap(
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str,
    path: Path,
    fmt: str = ".2f",
    cmap: str = "viridis",
    xlabel: str = "",
    ylabel: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool | None = None,
) -> Path:
    """Annotated square heatmap (class x class); NaN cells are grey and read "n/a".

    ``fmt`` formats each value (``"d"`` for counts); ``annotate`` defaults to on
    up to 25 classes. Text is black or white by the cell's brightness.
    """
    m = np.asarray(matrix, dtype=np.float64)
    n = len(labels)
    cell = min(0.95, 11.0 / max(n, 1))
    fig, ax = plt.subplots(figsize=(cell * n + 2.8, cell * n + 2.0))
    cm = plt.get_cmap(cmap).with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, vmin=vmin, vmax=vmax)
    fs = 9 if n <= 10 else max(4, min(7, int(cell * 72 * 0.7)))
    ax.set_xticks(range(n), list(labels), rotation=35, ha="right", fontsize=fs)
    ax.set_yticks(range(n), list(labels), fontsize=fs)
    if annotate if annotate is not None else n <= 25:
        for i in range(n):
            for j in range(n):
                v = m[i, j]
                if np.isnan(v):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=fs, color="black")
                    continue
                text = format(int(round(v)), fmt) if fmt.endswith("d") else format(v, fmt)
                ax.text(j, i, text, ha="center", va="center", fontsize=fs, color=_text_colour(cm(im.norm(v))))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path)


def plot_image_sizes(sizes: np.ndarray, path: Path, top: int = 3) -> Path:
    """Width vs height (one marker per distinct size, area ~ number of images) and aspect ratios.

    The ``top`` most common sizes are labelled in the scatter.
    """
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    if len(sizes) == 0:
        for ax in (a1, a2):
            ax.text(0.5, 0.5, "no readable image headers", ha="center", va="center", transform=ax.transAxes)
    else:
        counts = Counter(map(tuple, sizes.tolist()))
        uniq = np.array(list(counts.keys()))
        k = np.array(list(counts.values()))
        a1.scatter(uniq[:, 0], uniq[:, 1], s=12 + 300 * np.sqrt(k / k.max()), alpha=0.45, edgecolors="tab:blue", linewidths=0.5)
        for (w, h), c in counts.most_common(top):
            a1.annotate(f"{w}x{h}: {c}", (w, h), xytext=(6, 6), textcoords="offset points", fontsize=8)
        lim = sizes.max() * 1.1
        a1.plot([0, lim], [0, lim], ls=":", color="grey", lw=0.8)  # square images
        a1.set_xlim(0, lim)
        a1.set_ylim(0, lim)
        a1.set_aspect("equal")
        ratio = sizes[:, 0] / np.maximum(sizes[:, 1], 1)
        a2.hist(ratio, bins=40, color="tab:orange")
        a2.axvline(1.0, ls=":", color="grey", lw=0.8)
        a2.text(1.0, 0.98, " square", transform=a2.get_xaxis_transform(), va="top", fontsize=8, color="grey")
        a2.axvline(float(np.median(ratio)), ls="--", color="black", lw=0.8)
        a2.text(float(np.median(ratio)), 0.9, f" median {np.median(ratio):.2f}", transform=a2.get_xaxis_transform(), va="top", fontsize=8)
    a1.set_xlabel("width (px)")
    a1.set_ylabel("height (px)")
    a1.set_title(f"Image sizes ({len(sizes)} images; marker area ~ count)")
    a2.set_xlabel("aspect ratio (width / height)")
    a2.set_ylabel("images")
    a2.set_title("Aspect ratios")
    return save_figure(fig, path)


def _caption_lines(cap: str | Caption, width: int) -> list[tuple[str, str]]:
    segs = [(cap, "black")] if isinstance(cap, str) else list(cap)
    return [(line, colour) for text, colour in segs for line in (textwrap.wrap(text, width) or [""])]


class ShownFigure(Figure):
    """A figure made without pyplot (no global figure list, whatever the backend) that Jupyter displays as a PNG."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()


def image_grid(
    images: Sequence[Image.Image | None],
    captions: Sequence[str | Caption],
    ncols: int = 5,
    title: str = "",
    thumb: int = 200,
    row_labels: Sequence[str] | None = None,
) -> ShownFigure:
    """Thumbnails in a grid, each with its caption below (the figure: :func:`plot_image_grid` writes it).

    A caption is plain text (black) or a list of ``(text, colour)`` segments,
    one line each (e.g. green/orange/red prediction results); long lines wrap.
    A ``None`` image leaves its cell empty (to keep rows aligned), and
    ``row_labels`` names each row at its left. Images are shrunk to ``thumb``
    pixels so the figure stays small.
    """
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    width = 30  # characters per caption line at font size 8 in a 2.1 inch cell
    lines = [_caption_lines(c, width) for c in captions]
    max_lines = max((len(ls) for ls in lines), default=1)
    left = 0.35 if row_labels else 0.0
    fig = ShownFigure(figsize=(2.1 * ncols + left, (1.75 + 0.16 * max_lines) * nrows + (0.4 if title else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, lines):
        if img is None:
            continue
        im = img.copy()
        im.thumbnail((thumb, thumb))
        ax.imshow(im)
        for i, (text, colour) in enumerate(cap):
            ax.annotate(text, xy=(0.5, 0), xycoords="axes fraction", xytext=(0, -3 - _CAPTION_PT * i), textcoords="offset points", ha="center", va="top", fontsize=8, color=colour)
    for r, label in enumerate((row_labels or [])[:nrows]):
        axes[r, 0].text(-0.06, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center", fontsize=10, fontweight="bold")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_image_grid(images: Sequence[Image.Image | None], captions: Sequence[str | Caption], path: Path, ncols: int = 5, title: str = "", thumb: int = 200, row_labels: Sequence[str] | None = None) -> Path:
    """:func:`image_grid` written to ``path``."""
    return save_figure(image_grid(images, captions, ncols, title, thumb, row_labels), path)


def _column(rows: list[dict], key: str) -> list[float]:
    """A metrics.csv column as floats (NaN where a row lacks it: runs from before the column existed)."""
    return [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]


def _mark_phases(ax, phases: list[str]) -> None:
    for i, ph in enumerate(phases):
        if i == 0 or phases[i - 1] != ph:
            ax.axvline(i + 0.5, color="grey", lw=0.8, ls=":")
            ax.text(i + 0.6, 0.98, ph, transform=ax.get_xaxis_transform(), va="top", fontsize=7, color="grey")


def plot_training_curves(rows: list[dict], path: Path, best: int | None = None) -> Path:
    """Loss, val metrics (at 0.5 and at thresholds tuned on val) and the LR per epoch over all phases; phase starts
    and the epoch kept as best.pt (``best``: its row index) marked."""
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4))
    x = np.arange(1, len(rows) + 1)
    a1.plot(x, _column(rows, "train_loss"), marker=".", label="train loss")
    a1.plot(x, _column(rows, "val_loss"), marker=".", label="val loss")
    a1.set_ylabel("BCE loss")
    for key, label, style in (("val_samples_f1_tuned", "samples-F1, tuned thresholds", "-"), ("val_samples_f1", "samples-F1 at 0.5", "--"), ("val_micro_f1", "micro-F1 at 0.5", ":"), ("val_mAP", "mAP", "-.")):
        a2.plot(x, _column(rows, key), ls=style, marker=".", label=label)
    a2.set_ylabel("validation score")
    a3.plot(x, _column(rows, "lr"), drawstyle="steps-mid", label="phase peak LR (one-cycle)")
    a3.plot(x, _column(rows, "lr_end"), marker=".", ls="--", label="LR at the epoch's end")
    a3.set_yscale("log")
    a3.set_ylabel("learning rate")
    for ax in (a1, a2, a3):
        _mark_phases(ax, [r["phase"] for r in rows])
        if best is not None:
            ax.axvline(best + 1, color="#b00020", lw=1.2, alpha=0.6)
            ax.text(best + 1.1, 0.02, "best.pt", transform=ax.get_xaxis_transform(), fontsize=7, color="#b00020")
        ax.set_xlabel("epoch (all phases)")
        ax.legend(fontsize=7)
    a1.set_title("loss")
    a2.set_title("validation metrics")
    a3.set_title("learning rate")
    fig.tight_layout()
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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")


def plot_pr_curves(y: np.ndarray, p: np.ndarray, thresholds: Sequence[float], classes: Sequence[str], path: Path) -> Path:
    """Precision-recall per label, zoomed to where the curves are (both axes from just below the lowest point
    worth seeing), each label with its own line style and marker (readable without colour), its threshold marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(7, 5.5))
    low = 1.0
    for j, c in enumerate(classes):
        if not y[:, j].any():
            continue
        prec, rec, _ = precision_recall_curve(y[:, j], p[:, j])
        style, marker = LINESTYLES[j % len(LINESTYLES)], MARKERS[j % len(MARKERS)]
        line = ax.plot(rec, prec, ls=style, marker=marker, markevery=max(1, len(rec) // 8), ms=5, label=f"{c} (AP {average_precision_score(y[:, j], p[:, j]):.3f})")[0]
        pred = p[:, j] >= thresholds[j]
        tp = (pred & (y[:, j] == 1)).sum()
        at = (tp / max(y[:, j].sum(), 1), tp / max(pred.sum(), 1))
        ax.plot(*at, marker=marker, color=line.get_color(), ms=11, mec="black", mew=1.5, ls="none")
        ax.annotate(f"t={thresholds[j]:.2f}", at, textcoords="offset points", xytext=(6, -12), fontsize=7)
        useful = rec >= 0.5  # the part of a curve anyone would operate on
        low = min(low, float(prec[useful].min()) if useful.any() else 0.0, 0.5)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall per label (big marker: the tuned threshold t)")
    ax.set_xlim(0.5 if low > 0 else 0.0, 1.01)
    ax.set_ylim(max(0.0, low - 0.05), 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, path)


def plot_reliability(y: np.ndarray, p: np.ndarray, classes: Sequence[str], eces: Sequence[float], path: Path, bins: int = 10) -> Path:
    """Reliability diagram per label: mean predicted probability vs observed frequency, each bin's image count
    written beside its point and drawn as bars underneath (a point of 3 images says little)."""
    n = len(classes)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.3), squeeze=False)
    edges = np.linspace(0, 1, bins + 1)
    for j, (ax, c) in enumerate(zip(axes[0], classes)):
        idx = np.clip(np.digitize(p[:, j], edges[1:-1]), 0, bins - 1)
        counts = np.bincount(idx, minlength=bins)
        conf = [p[idx == b, j].mean() if counts[b] else np.nan for b in range(bins)]
        freq = [y[idx == b, j].mean() if counts[b] else np.nan for b in range(bins)]
        ax.bar(edges[:-1], counts / max(counts.max(), 1) * 0.25, width=1 / bins, align="edge", color="#ddd", edgecolor="#bbb")
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.plot(conf, freq, "o-")
        for x_, y_, k in zip(conf, freq, counts):
            if k:
                ax.annotate(str(k), (x_, y_), textcoords="offset points", xytext=(3, 3), fontsize=6)
        ax.set_title(f"{c}\nECE {eces[j]:.3f}", fontsize=9)
        ax.set_xlabel("predicted probability")
        if j == 0:
            ax.set_ylabel("observed frequency\n(bars: images per bin)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    fig.tight_layout()
    return save_figure(fig, path)


def result_caption(name: str, true: Sequence[str], pred: Sequence[str], probs: dict[str, float], thresholds: dict[str, float] | None = None) -> list[tuple[str, str]]:
    """Caption segments: correct labels green, missed orange, extra red; each with its probability (and threshold)."""
    segs = [(name, "dimgray")]
    for c in sorted(set(true) | set(pred), key=lambda c: -probs.get(c, 0)):
        p = probs.get(c, 0.0)
        value = f"{p:.2f}" + (f"/{thresholds[c]:.2f}" if thresholds else "")
        if c in true and c in pred:
            segs.append((f"✓ {c} {value}", "green"))
        elif c in true:
            segs.append((f"missed {c} {value}", "darkorange"))
        else:
            segs.append((f"extra {c} {value}", "red"))
    return segs


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggestion: float, steepest: float, path: Path, title: str = "LR finder", chosen: float | None = None) -> Path:
    """Smoothed loss against LR (log x) with the finder's suggestions and the LR used marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    ax.set_title(title)
    ax.axvline(suggestion, color="tab:green", ls="--", label=f"valley {suggestion:.1e}")
    ax.axvline(steepest, color="tab:orange", ls=":", label=f"steepest {steepest:.1e}")
    if chosen is not None:
        ax.axvline(chosen, color="tab:red", label=f"used {chosen:.1e}")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
