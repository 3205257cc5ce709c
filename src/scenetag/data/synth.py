"""A small synthetic multi-label scene set, drawn with Pillow, in the MIML layout.

Each image gets a random non-empty subset of the five MIML classes and shows
the matching shapes (sand, mountains, water, a setting sun, trees), so the whole
pipeline can be tried and tested anywhere without the real photos.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import DataError
from ..io import atomic_write_text
from .layouts import MIML_CLASSES

# Label-set frequencies roughly like MIML: mostly one label, some pairs, few triples.
_N_LABEL_P = (0.75, 0.22, 0.03)


def _sample_labels(rng: np.random.Generator) -> np.ndarray:
    k = rng.choice(3, p=_N_LABEL_P) + 1
    y = np.zeros(len(MIML_CLASSES), dtype=int)
    y[rng.choice(len(MIML_CLASSES), size=k, replace=False)] = 1
    if y[0] and y[2] and rng.random() < 0.7:  # desert+sea is rare in real photos
        y[rng.choice([0, 2])] = 0
    return y


def draw_scene(y: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Draw one scene with the shapes of the positive classes in ``y`` (MIML order)."""
    desert, mountains, sea, sunset, trees = (bool(v) for v in y)
    w, h = size
    horizon = int(h * rng.uniform(0.45, 0.65))
    sky_top = np.array([250, 120, 40]) if sunset else np.array([70, 130, 220])
    sky_bot = np.array([255, 200, 90]) if sunset else np.array([170, 210, 245])
    t = np.linspace(0, 1, horizon)[:, None]
    sky = (sky_top * (1 - t) + sky_bot * t).astype(np.uint8)
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:horizon] = sky[:, None, :]
    ground = [200, 180, 120] if desert else ([40, 90, 160] if sea else [90, 130, 70])
    arr[horizon:] = np.array(ground, dtype=np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    if sunset:
        r = int(h * rng.uniform(0.08, 0.14))
        cx = int(w * rng.uniform(0.2, 0.8))
        d.ellipse([cx - r, horizon - r, cx + r, horizon + r], fill=(255, 90, 20))
    if mountains:
        for _ in range(rng.integers(2, 4)):
            cx = int(w * rng.uniform(0.1, 0.9))
            half = int(w * rng.uniform(0.15, 0.3))
            top = int(horizon - h * rng.uniform(0.25, 0.4))
            d.polygon([(cx - half, horizon), (cx, top), (cx + half, horizon)], fill=(105, 100, 110))
            d.polygon([(cx - half // 4, top + (horizon - top) // 4), (cx, top), (cx + half // 4, top + (horizon - top) // 4)], fill=(245, 245, 250))
    if desert:
        for _ in range(3):
            y0 = int(horizon + (h - horizon) * rng.uniform(0.1, 0.9))
            d.arc([-w // 2, y0 - 20, int(w * 1.5), y0 + 20], 180, 360, fill=(170, 140, 80), width=3)
        if sea:
            d.rectangle([0, horizon, w, horizon + (h - horizon) // 3], fill=(40, 90, 160))
    if sea:
        for _ in range(6):
            y0 = int(horizon + (h - horizon) * rng.uniform(0.05, 0.95))
            x0 = int(w * rng.uniform(0, 0.8))
            d.line([(x0, y0), (x0 + w // 6, y0)], fill=(220, 235, 250), width=2)
    if trees:
        for _ in range(rng.integers(2, 5)):
            cx = int(w * rng.uniform(0.05, 0.95))
            base = int(horizon + (h - horizon) * rng.uniform(0.1, 0.6))
            th = int(h * rng.uniform(0.15, 0.3))
            d.rectangle([cx - 3, base - th // 2, cx + 3, base], fill=(90, 60, 30))
            r = th // 3
            d.ellipse([cx - r, base - th // 2 - r, cx + r, base - th // 2 + r], fill=(30, 120, 40))
    im = im.filter(ImageFilter.GaussianBlur(0.6))
    noise = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(im, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def make_synthetic(out: Path | str, n: int = 60, seed: int = 0, size: tuple[int, int] = (96, 64), force: bool = False) -> Path:
    """Write ``n`` synthetic scenes as ``out/original/<i>.jpg`` + ``out/labels.json``; return ``out``.

    A folder that already holds files is refused (it may be someone's data set) unless ``force``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if not force and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: folder is not empty; synth would overwrite its images and labels (pass --force to write there anyway)")
    rng = np.random.default_rng(seed)
    (out / "original").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(1, n + 1):
        y = _sample_labels(rng)
        wh = size if rng.random() < 0.7 else (size[1], size[0])
        img = draw_scene(y, wh, rng)
        tmp = out / "original" / f".{i}.jpg.tmp"
        img.save(tmp, format="JPEG", quality=90)
        os.replace(tmp, out / "original" / f"{i}.jpg")
        lines.append(json.dumps([1 if v else -1 for v in y]))
    atomic_write_text(out / "labels.json", "\n".join(lines) + "\n")
    return out
