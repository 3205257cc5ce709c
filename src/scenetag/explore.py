"""Exploration report of a data set: statistics + pictures in one self-contained report.html."""
from __future__ import annotations

import base64
import html
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from .data import MultiLabelDataset, label_stats, open_image
from .io import atomic_write_json, atomic_write_text
from .visualisation import (
    plot_combinations,
    plot_heatmap,
    plot_image_grid,
    plot_image_sizes,
    plot_label_distribution,
    plot_labels_per_image,
)

log = logging.getLogger(__name__)
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def image_sizes(paths) -> np.ndarray:
    """(n, 2) width/height as displayed, from the headers only (no full decode)."""
    out = np.zeros((len(paths), 2), dtype=np.int64)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                w, h = im.size
                if im.getexif().get(0x0112) in _ROTATED:
                    w, h = h, w
        except OSError:
            w = h = 0  # reported by --check; keep the report going
        out[i] = (w, h)
    return out


def cooccurrence(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts Y^T Y and conditional P(B | A) (row A, column B)."""
    y = y.astype(np.int64)
    counts = y.T @ y
    diag = np.diag(counts).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = np.where(diag[:, None] > 0, counts / diag[:, None], np.nan)
    return counts, cond


def label_correlation(y: np.ndarray) -> np.ndarray:
    """Pearson (phi) correlation between label columns; NaN for a constant column."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(y.astype(np.float64), rowvar=False)


def sample_indices(y: np.ndarray, per_class: int, seed: int) -> list[int]:
    """A few images per class, distinct, chosen reproducibly."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for j in range(y.shape[1]):
        pool = [i for i in np.flatnonzero(y[:, j]) if i not in chosen]
        chosen += [int(i) for i in rng.permutation(pool)[:per_class]]
    return chosen


def summarise(ds: MultiLabelDataset, sizes: np.ndarray, counts: np.ndarray, cond: np.ndarray) -> dict:
    """Summary dict (also summary.json) with human-readable lines under ``text``."""
    stats = label_stats(ds)
    per = stats["per_class"]
    n = stats["n_images"]
    imbalance = max(per.values()) / max(min(per.values()), 1)
    pairs = []
    c = ds.classes
    for a in range(len(c)):
        for b in range(a + 1, len(c)):
            if counts[a, b]:
                pairs.append({"pair": f"{c[a]}+{c[b]}", "count": int(counts[a, b]), f"P(B|A)": float(cond[a, b]), "P(A|B)": float(cond[b, a])})
    pairs.sort(key=lambda d: -d["count"])
    valid = sizes[(sizes > 0).all(1)]
    common = Counter(f"{w}x{h}" for w, h in valid).most_common(5)
    size_stats = {
        "width": {"min": int(valid[:, 0].min()), "median": float(np.median(valid[:, 0])), "max": int(valid[:, 0].max())} if len(valid) else {},
        "height": {"min": int(valid[:, 1].min()), "median": float(np.median(valid[:, 1])), "max": int(valid[:, 1].max())} if len(valid) else {},
        "most_common": [{"size": s, "count": k} for s, k in common],
    }
    text = [
        f"{n} images, {stats['n_classes']} classes, {stats['mean_labels_per_image']:.3f} labels per image",
        "per class: " + ", ".join(f"{k} {v} ({v / n:.1%})" for k, v in per.items()),
        "labels per image: " + ", ".join(f"{k}: {v}" for k, v in stats["labels_per_image"].items() if v),
        f"imbalance (largest / smallest class): {imbalance:.2f}",
        "most frequent pairs: " + ", ".join(f"{p['pair']} {p['count']}" for p in pairs[:3]),
    ]
    if common:
        text.append("most common sizes: " + ", ".join(f"{s} ({k})" for s, k in common[:3]))
    return stats | {"imbalance_ratio": imbalance, "pairs": pairs, "image_sizes": size_stats, "text": text}


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def write_report(out: Path, summary: dict, figures: list[tuple[str, str, Path]], title: str = "scenetag data exploration") -> Path:
    """One self-contained HTML file: summary, tables and every figure embedded."""
    per = summary["per_class"]
    n = summary["n_images"]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td><td>{v / n:.1%}</td></tr>" for k, v in per.items())
    combos = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in summary["combinations"].items())
    figs = "".join(f"<h2>{html.escape(h)}</h2><p>{html.escape(cap)}</p>{_img_tag(p)}" for h, cap, p in figures)
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}img{{max-width:100%;border:1px solid #ddd}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 10px;text-align:left}}li{{margin:.2em 0}}</style></head>
<body><h1>{html.escape(title)}</h1><ul>{''.join(f'<li>{html.escape(t)}</li>' for t in summary['text'])}</ul>
<h2>Per class</h2><table><tr><th>class</th><th>images</th><th>share</th></tr>{rows}</table>
<h2>Label combinations</h2><table><tr><th>combination</th><th>images</th></tr>{combos}</table>{figs}</body></html>"""
    return atomic_write_text(out / "report.html", body)


def explore(ds: MultiLabelDataset, out: Path, samples_per_class: int = 4, seed: int = 0) -> dict:
    """Write the exploration PNGs, ``summary.json`` and ``report.html`` into ``out``; return the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    y = ds.labels
    classes = list(ds.classes)
    sizes = image_sizes(ds.paths)
    counts, cond = cooccurrence(y)
    summary = summarise(ds, sizes, counts, cond)
    summary["correlation"] = np.nan_to_num(label_correlation(y)).round(4).tolist()
    summary["cooccurrence"] = counts.tolist()
    summary["conditional"] = np.nan_to_num(cond).round(4).tolist()
    figures = [
        ("Label distribution", "Images carrying each label (count and share of all images).", plot_label_distribution(classes, y.sum(0).tolist(), len(ds), out / "label_distribution.png")),
        ("Labels per image", "How many labels each image has.", plot_labels_per_image(summary["labels_per_image"], out / "labels_per_image.png")),
        ("Label combinations", "Every combination of labels that occurs, with its count.", plot_combinations(summary["combinations"], out / "combinations.png")),
        ("Correlation", "Pearson (phi) correlation between label columns.", plot_heatmap(np.nan_to_num(label_correlation(y)), classes, "Label correlation", out / "correlation.png", cmap="coolwarm", vmin=-1, vmax=1)),
        ("Co-occurrence counts", "Images carrying both labels; the diagonal is the class count.", plot_heatmap(counts, classes, "Co-occurrence (images)", out / "cooccurrence.png", fmt="d")),
        ("P(column | row)", "Share of the row label's images that also carry the column label.", plot_heatmap(np.nan_to_num(cond), classes, "P(column | row)", out / "conditional.png", vmin=0, vmax=1, xlabel="B", ylabel="A")),
        ("Image sizes", "Width vs height as displayed, and the aspect ratio distribution.", plot_image_sizes(sizes[(sizes > 0).all(1)], out / "image_sizes.png")),
    ]
    idx = sample_indices(y, samples_per_class, seed)
    images, captions = [], []
    for i in idx:
        try:
            images.append(open_image(ds.paths[i]))
            captions.append([(ds.paths[i].name, "dimgray"), (", ".join(ds.label_names(i)), "black")])
        except Exception as e:  # a bad file must not sink the report; --check lists them
            log.warning("skipping %s in the sample grid: %s", ds.paths[i], e)
    if images:
        figures.append(("Sample images", f"{samples_per_class} random images per class with all their labels.", plot_image_grid(images, captions, out / "samples.png", ncols=samples_per_class * 2 if samples_per_class <= 3 else samples_per_class, title="Samples with their labels")))
    atomic_write_json(out / "summary.json", summary)
    write_report(out, summary, figures)
    return summary
