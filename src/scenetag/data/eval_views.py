"""The deterministic views prediction uses, with Pillow and numpy only (no torch).

A slim install (ONNX models) predicts with these; training and the PyTorch path use
the same functions (:mod:`scenetag.data.transforms` wraps them), so every engine
sees the same pixels. They reproduce torchvision's PIL kernels exactly (resize by the
short side with ``int`` rounding of the long one, centre crop anchored at
``round((size - crop) / 2)``, ``uint8 / 255`` in float32, then ``(x - mean) / std``):
``tests/data/test_eval_views.py`` checks them bit for bit against torchvision.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .preprocessing import Preprocessing

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
REGION_FRACTION = 2 / 3


def _resize_short_side(img: Image.Image, short: int, resample: Image.Resampling) -> Image.Image:
    w, h = img.size
    if w <= h:
        size = (short, int(short * h / w))
    else:
        size = (int(short * w / h), short)
    return img if size == img.size else img.resize(size, resample=resample)


def _center_crop(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    if side > w or side > h:  # pad with black, centred, as torchvision does
        padded = Image.new(img.mode, (max(w, side), max(h, side)))
        padded.paste(img, ((side - w) // 2 if side > w else 0, (side - h) // 2 if side > h else 0))
        img, (w, h) = padded, padded.size
        if (w, h) == (side, side):
            return img
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    return img.crop((left, top, left + side, top + side))


def resize_image(img: Image.Image, pp: Preprocessing) -> Image.Image:
    """Deterministic eval geometry: the ``orig`` view before normalisation."""
    resample = RESAMPLE[pp.interpolation]
    if pp.resize == "squash":
        return img if img.size == (pp.size, pp.size) else img.resize((pp.size, pp.size), resample=resample)
    return _center_crop(_resize_short_side(img, int(round(pp.size / pp.crop_pct)), resample), pp.size)


def mirror(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def region_crop(img: Image.Image, kind: str) -> Image.Image:
    """The ``region_*`` view's part of the image: a 2/3-size box at one corner (before resizing)."""
    w, h = img.size
    cw, ch = max(1, round(w * REGION_FRACTION)), max(1, round(h * REGION_FRACTION))
    left = 0 if kind.endswith("l") else w - cw
    top = 0 if kind[-2] == "t" else h - ch  # region_tl: top left
    return img.crop((left, top, left + cw, top + ch))


def fixed_view(img: Image.Image, kind: str, pp: Preprocessing, base: Image.Image | None = None) -> Image.Image:
    """A view without randomness: orig, flip or a region, maybe mirrored (``base``: the resized image, when already made)."""
    if kind.startswith("region_"):
        region = resize_image(region_crop(img, kind.removesuffix("_flip")), pp)
        return mirror(region) if kind.endswith("_flip") else region
    base = base if base is not None else resize_image(img, pp)
    return base if kind == "orig" else mirror(base)


def to_array(img: Image.Image, pp: Preprocessing) -> np.ndarray:
    """uint8 RGB PIL image (already size x size) -> normalised float32 (3, size, size) array."""
    x = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255)
    mean = np.asarray(pp.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(pp.std, dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def eval_array(img: Image.Image, pp: Preprocessing, bag: Sequence[str] = ()) -> np.ndarray:
    """The exact input prediction uses for one RGB image: (3, size, size), or (len(bag), 3, size, size) for a bag model."""
    if bag:
        return np.stack([to_array(fixed_view(img, kind, pp), pp) for kind in bag])
    return to_array(resize_image(img, pp), pp)
