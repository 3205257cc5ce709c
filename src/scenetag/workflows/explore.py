"""Exploration report of a data set: statistics and pictures in one self-contained report.html.

:func:`explore` writes into its output folder (every file atomically):

* ``label_distribution.png``, ``labels_per_image.png``, ``combinations.png``;
* ``correlation.png`` (phi), ``cooccurrence.png`` (counts), ``conditional.png`` (P(B | A));
* ``image_sizes.png`` (from the image headers only), ``samples.png`` (a few images per class);
* ``summary.json`` (the returned dict) and ``report.html`` (all of it, figures embedded).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..data.dataset import MultiLabelDataset, label_stats
from ..data.images import DEFAULT_MAX_PIXELS, open_image
from ..errors import DataError
from ..io import atomic_write_json
from ..report.html import Section, figure, paragraph, preformatted, table, write_page
from ..runs import REPORT_PAGE
from ..report.figures import (
    plot_combinations,
    plot_heatmap,
    plot_image_grid,
    plot_image_sizes,
    plot_label_distribution,
    plot_labels_per_image,
)

log = logging.getLogger(__name__)

_ORIENTATION = 0x0112  # EXIF tag
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
THUMB = 200  # longest side of the sample thumbnails, pixels
MAX_SAMPLES = 40  # thumbnails in the sample grid at most, so the figure stays small
MAX_PAIRS = 20  # pairs listed in the summary

# (file name, heading, one-sentence caption) of every figure, in report order.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("label_distribution.png", "Label distribution", "Number of images carrying each label, with its share of all images."),
    ("labels_per_image.png", "Labels per image", "How many labels each image has."),
    ("combinations.png", "Label combinations", "Every combination of labels that occurs, most frequent first, with its count and share."),
    ("correlation.png", "Label correlation", "Pearson (phi) correlation between the 0/1 label columns; n/a for a label that never or always occurs."),
    ("cooccurrence.png", "Co-occurrence counts", "Images carrying both the row and the column label; the diagonal is each label's count."),
    ("conditional.png", "Conditional co-occurrence P(B | A)", "Share of the images with row label A that also carry column label B (each row is one given label)."),
    ("image_sizes.png", "Image sizes", "Width against height as displayed (EXIF rotation applied), read from the file headers, and the aspect-ratio distribution."),
    ("samples.png", "Sample images", "A few randomly chosen images per class, one row per class, each captioned with its file name and all its labels."),
)


# --------------------------------------------------------------------------- statistics


def image_sizes(paths: Sequence[Path | str]) -> np.ndarray:
    """(n, 2) width and height as displayed, read from the headers only (no decode).

    An EXIF orientation of 5-8 swaps width and height. Unreadable files give
    ``(0, 0)`` (``explore --check`` names them); the report carries on.
    """
    out = np.zeros((len(paths), 2), dtype=np.int64)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:  # lazy: parses the header, not the pixels
                w, h = im.size
                if im.getexif().get(_ORIENTATION) in _ROTATED:
                    w, h = h, w
        except Exception as e:  # noqa: BLE001 - any unreadable header: PIL raises many types
            log.debug("cannot read the size of %s: %s", p, e)
            w = h = 0
        out[i] = (w, h)
    return out


def cooccurrence(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``Y^T Y`` and conditional ``P(B | A)`` (row A given, column B); NaN rows for empty A."""
    y = np.asarray(y, dtype=np.int64)
    counts = y.T @ y
    diag = np.diag(counts).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = np.where(diag[:, None] > 0, counts / diag[:, None], np.nan)
    return counts, cond


def label_correlation(y: np.ndarray) -> np.ndarray:
    """Pearson (phi) correlation between label columns, as ``np.corrcoef(y, rowvar=False)``.

    Also defined for a single column; NaN in the rows/columns of a constant label.
    """
    x = np.asarray(y, dtype=np.float64)
    x = x - x.mean(0) if len(x) else x
    norm = np.sqrt((x * x).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (x.T @ x) / np.outer(norm, norm)
    corr[(norm == 0)[:, None] | (norm == 0)[None, :]] = np.nan
    return np.clip(corr, -1.0, 1.0)


def sample_indices(y: np.ndarray, per_class: int, seed: int, usable: Callable[[int], bool] | None = None) -> list[list[int]]:
    """Up to ``per_class`` distinct images per class (one list per class), reproducible from ``seed``.

    Candidates are tried in a seeded random order; ``usable(i)`` (e.g. "the
    image decodes") can reject one, and the next candidate is taken instead.
    """
    rng = np.random.default_rng(seed)
    used: set[int] = set()
    rows: list[list[int]] = []
    for j in range(y.shape[1]):
        row: list[int] = []
        for i in rng.permutation(np.flatnonzero(y[:, j])).tolist():
            if len(row) >= per_class:
                break
            if i in used:
                continue
            used.add(i)
            if usable is None or usable(i):
                row.append(i)
        rows.append(row)
    return rows


def size_stats(sizes: np.ndarray, top: int = 5) -> dict:
    """Min/median/max width, height and aspect ratio, and the most common sizes (unreadable excluded)."""
    valid = sizes[(sizes > 0).all(1)]
    out: dict = {"n_read": int(len(valid)), "n_unreadable": int(len(sizes) - len(valid))}
    if len(valid):
        ratio = valid[:, 0] / valid[:, 1]
        for name, col in (("width", valid[:, 0]), ("height", valid[:, 1])):
            out[name] = {"min": int(col.min()), "median": float(np.median(col)), "max": int(col.max())}
        out["aspect_ratio"] = {"min": round(float(ratio.min()), 4), "median": round(float(np.median(ratio)), 4), "max": round(float(ratio.max()), 4)}
        out["n_portrait"] = int((valid[:, 1] > valid[:, 0]).sum())
        out["n_distinct_sizes"] = len({(int(w), int(h)) for w, h in valid})
    out["most_common"] = [{"size": f"{w}x{h}", "count": k} for (w, h), k in Counter(map(tuple, valid.tolist())).most_common(top)]
    return out


def frequent_pairs(classes: Sequence[str], counts: np.ndarray, cond: np.ndarray, top: int = MAX_PAIRS) -> list[dict]:
    """Label pairs that occur together, most frequent first: count, P(B | A) and P(A | B)."""
    pairs = []
    for a in range(len(classes)):
        for b in range(a + 1, len(classes)):
            if counts[a, b]:
                pairs.append({
                    "a": classes[a],
                    "b": classes[b],
                    "count": int(counts[a, b]),
                    "P(B|A)": round(float(cond[a, b]), 4),
                    "P(A|B)": round(float(cond[b, a]), 4),
                })
    pairs.sort(key=lambda d: (-d["count"], d["a"], d["b"]))
    return pairs[:top]


def _matrix_json(m: np.ndarray, digits: int = 4) -> list[list[float | None]]:
    """A matrix as nested lists, NaN as ``None`` (JSON null)."""
    return [[None if np.isnan(v) else round(float(v), digits) for v in row] for row in np.asarray(m, dtype=np.float64)]


def summarise(ds: MultiLabelDataset, sizes: np.ndarray, counts: np.ndarray, cond: np.ndarray, corr: np.ndarray) -> dict:
    """The summary (also ``summary.json``): ``label_stats`` plus sizes, imbalance, pairs, matrices and ``text``."""
    stats = label_stats(ds)
    per = stats["per_class"]
    n = stats["n_images"]
    classes = list(ds.classes)
    nonzero = {k: v for k, v in per.items() if v}
    big = max(per, key=per.get)
    small = min(per, key=per.get)
    imbalance = per[big] / per[small] if per[small] else None
    pairs = frequent_pairs(classes, counts, cond)
    sz = size_stats(sizes)
    width = max(len(c) for c in classes)
    text = [
        f"{n} images, {len(classes)} classes, {stats['mean_labels_per_image']:.3f} labels per image",
        "per class (images, share of all images):",
        *(f"  {c:<{width}} {v:>6}  {v / n:6.1%}" for c, v in per.items()),
        "labels per image: " + ", ".join(f"{k}: {v}" for k, v in stats["labels_per_image"].items() if v),
    ]
    if imbalance is not None:
        text.append(f"imbalance (largest / smallest class): {imbalance:.2f} ({big} {per[big]} / {small} {per[small]})")
    else:
        empty = [c for c, v in per.items() if not v]
        text.append(f"imbalance undefined: no image has {', '.join(empty)}" + (f" (largest class {big} {per[big]})" if nonzero else ""))
    text.append(f"{len(stats['combinations'])} distinct label combinations; most frequent: " + ", ".join(f"{k} {v}" for k, v in list(stats["combinations"].items())[:3]))
    if pairs:
        text.append("most frequent pairs (images with both; P(B|A), P(A|B)):")
        text += [f"  {p['a']}+{p['b']} {p['count']}: P({p['b']}|{p['a']}) {p['P(B|A)']:.2f}, P({p['a']}|{p['b']}) {p['P(A|B)']:.2f}" for p in pairs[:3]]
    else:
        text.append("no two labels ever occur together")
    if sz["n_read"]:
        text.append(
            f"image sizes: width {sz['width']['min']}-{sz['width']['max']} (median {sz['width']['median']:g}), "
            f"height {sz['height']['min']}-{sz['height']['max']} (median {sz['height']['median']:g}); most common "
            + ", ".join(f"{s['size']} ({s['count']})" for s in sz["most_common"][:3])
        )
    if sz["n_unreadable"]:
        text.append(f"{sz['n_unreadable']} image header(s) could not be read (run explore --check to list them)")
    text += [f"warning: {w}" for w in ds.warnings]
    return stats | {
        "source": ds.source,
        "imbalance_ratio": None if imbalance is None else round(imbalance, 4),
        "pairs": pairs,
        "image_sizes": sz,
        "cooccurrence": counts.astype(int).tolist(),
        "conditional": _matrix_json(cond),
        "correlation": _matrix_json(corr),
        "text": text,
    }


# --------------------------------------------------------------------------- report


def write_report(out: Path, summary: dict, figures: Sequence[tuple[str, str, Path]], title: str = "scenetag data exploration") -> Path:
    """One self-contained ``report.html``: text summary, tables and every figure embedded."""
    n = summary["n_images"]
    sz = summary["image_sizes"]
    pairs = [(f"{p['a']} + {p['b']}", p["count"], f"{p['P(B|A)']:.3f}", f"{p['P(A|B)']:.3f}") for p in summary["pairs"]]
    sizes = [(name, sz[name]["min"], f"{sz[name]['median']:g}", sz[name]["max"]) for name in ("width", "height", "aspect_ratio") if name in sz]
    sections = [
        Section("Summary", preformatted(summary["text"])),
        Section("Per class", table(("class", "images", "share of images"), [(c, v, f"{v / n:.1%}") for c, v in summary["per_class"].items()])),
        Section("Label combinations", table(("combination", "images", "share"), [(k, v, f"{v / n:.1%}") for k, v in summary["combinations"].items()])),
        Section("Most frequent pairs", table(("A + B", "images with both", "P(B | A)", "P(A | B)"), pairs) if pairs else paragraph("No two labels ever occur together.")),
        Section("Image sizes", table(("", "min", "median", "max"), sizes) + table(("most common size", "images"), [(s["size"], s["count"]) for s in sz["most_common"]])),
    ] + [Section(heading, figure(path), caption) for heading, caption, path in figures]
    return write_page(Path(out) / REPORT_PAGE, title, sections, subtitle=[summary.get("source", "")])


# --------------------------------------------------------------------------- entry point


def _sample_grid(ds: MultiLabelDataset, out: Path, per_class: int, seed: int, max_pixels: int | None) -> Path | None:
    """``samples.png``: one row per class of ``per_class`` images that decode, captioned with all labels.

    At most :data:`MAX_SAMPLES` thumbnails: with many classes fewer per class
    (at least one), and above 10 classes a compact grid with the class in the caption.
    """
    n_classes = len(ds.classes)
    per = min(per_class, max(1, MAX_SAMPLES // n_classes))
    if per < per_class:
        log.info("sample grid: %d image(s) per class instead of %d (%d classes)", per, per_class, n_classes)
    per_class = per
    thumbs: dict[int, Image.Image] = {}

    def usable(i: int) -> bool:
        try:
            im = open_image(ds.paths[i], max_pixels)
        except DataError as e:  # a bad file must not sink the report; --check lists them
            log.warning("sample grid: skipping %s", e)
            return False
        im.thumbnail((THUMB, THUMB))
        thumbs[i] = im
        return True

    rows = sample_indices(ds.labels[:, : MAX_SAMPLES // per_class], per_class, seed, usable)
    if not any(rows):
        return None
    images: list[Image.Image | None] = []
    captions: list[list[tuple[str, str]]] = []
    title = "Samples per class, with all their labels"
    if n_classes <= 10:  # one row per class, blanks keep the rows aligned
        for row in rows:
            for k in range(per_class):
                i = row[k] if k < len(row) else None
                images.append(None if i is None else thumbs[i])
                captions.append([] if i is None else [(ds.paths[i].name, "dimgray"), (", ".join(ds.label_names(i)), "black")])
        return plot_image_grid(images, captions, out / "samples.png", ncols=per_class, title=title, thumb=THUMB, row_labels=list(ds.classes))
    for j, row in enumerate(rows):
        for i in row:
            images.append(thumbs[i])
            captions.append([(f"{ds.classes[j]}: {ds.paths[i].name}", "dimgray"), (", ".join(ds.label_names(i)), "black")])
    return plot_image_grid(images, captions, out / "samples.png", ncols=8, title=title, thumb=THUMB)


def explore(ds: MultiLabelDataset, out: Path, samples_per_class: int = 4, seed: int = 0, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict:
    """Write the exploration PNGs, ``summary.json`` and ``report.html`` into ``out``; return the summary.

    ``samples_per_class`` images per class (chosen with ``seed``) go into the
    sample grid; 0 leaves it out.
    """
    if len(ds) == 0 or not ds.classes:
        raise DataError("nothing to explore: the data set has no images or no classes")
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    y = ds.labels
    classes = list(ds.classes)
    sizes = image_sizes(ds.paths)
    log.info("read %d image headers in %.2fs", len(sizes), time.perf_counter() - t0)
    counts, cond = cooccurrence(y)
    corr = label_correlation(y)
    summary = summarise(ds, sizes, counts, cond, corr)
    paths: dict[str, Path | None] = {
        "label_distribution.png": plot_label_distribution(classes, y.sum(0).tolist(), out / "label_distribution.png", n_images=len(ds)),
        "labels_per_image.png": plot_labels_per_image(summary["labels_per_image"], out / "labels_per_image.png"),
        "combinations.png": plot_combinations(summary["combinations"], out / "combinations.png"),
        "correlation.png": plot_heatmap(corr, classes, "Label correlation (phi)", out / "correlation.png", cmap="RdBu_r", vmin=-1, vmax=1),
        "cooccurrence.png": plot_heatmap(counts, classes, "Co-occurrence (images with both labels)", out / "cooccurrence.png", fmt="d", cmap="Blues"),
        "conditional.png": plot_heatmap(cond, classes, "P(B | A): share of row-A images that also have B", out / "conditional.png", cmap="Blues", vmin=0, vmax=1, xlabel="B (also has)", ylabel="A (given)"),
        "image_sizes.png": plot_image_sizes(sizes[(sizes > 0).all(1)], out / "image_sizes.png"),
        "samples.png": _sample_grid(ds, out, samples_per_class, seed, max_pixels) if samples_per_class > 0 else None,
    }
    figures = [(heading, caption, paths[name]) for name, heading, caption in FIGURES if paths.get(name) is not None]
    summary["files"] = [p.name for _, _, p in figures] + ["summary.json", REPORT_PAGE]
    atomic_write_json(out / "summary.json", summary)
    write_report(out, summary, figures)
    log.info("exploration report of %d images written to %s in %.1fs", len(ds), out, time.perf_counter() - t0)
    return summary
