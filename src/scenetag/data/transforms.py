"""Preprocessing and the fixed set of augmented views that training caches.

A frozen backbone's output for a view never changes, so instead of random
augmentation every epoch we compute a small, fixed list of views per image once
(original, flip, a few mild random-resized crops with light colour jitter) and
sample one per image per epoch. More views = more augmentation diversity and a
proportionally longer caching pass. No vertical flips: the sky is up.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from .preprocessing import FIXED_KINDS, VIEW_KINDS, Preprocessing

_INTERP = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def resize_image(img: Image.Image, pp: Preprocessing) -> Image.Image:
    """Deterministic eval geometry: the ``orig`` view before normalisation."""
    interp = _INTERP[pp.interpolation]
    if pp.resize == "squash":
        return F.resize(img, [pp.size, pp.size], interpolation=interp, antialias=True)
    short = int(round(pp.size / pp.crop_pct))
    return F.center_crop(F.resize(img, short, interpolation=interp, antialias=True), [pp.size, pp.size])


def to_tensor(img: Image.Image, pp: Preprocessing) -> torch.Tensor:
    """uint8 PIL image (already size x size) -> normalised float CHW tensor."""
    x = F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)
    return F.normalize(x, list(pp.mean), list(pp.std))


def eval_tensor(img: Image.Image, pp: Preprocessing, bag: tuple[str, ...] | list[str] = ()) -> torch.Tensor:
    """The exact tensor prediction uses for one RGB image: (3, size, size), or (len(bag), 3, size, size) for a bag model."""
    if bag:
        return torch.stack([to_tensor(_fixed_view(img, kind, pp), pp) for kind in bag])
    return to_tensor(resize_image(img, pp), pp)


REGION_FRACTION = 2 / 3


def region_crop(img: Image.Image, kind: str) -> Image.Image:
    """The ``region_*`` view's part of the image: a 2/3-size box at one corner (before resizing)."""
    w, h = img.size
    cw, ch = max(1, round(w * REGION_FRACTION)), max(1, round(h * REGION_FRACTION))
    left = 0 if kind.endswith("l") else w - cw
    top = 0 if kind[-2] == "t" else h - ch  # region_tl: top left
    return img.crop((left, top, left + cw, top + ch))


def _fixed_view(img: Image.Image, kind: str, pp: Preprocessing, base: Image.Image | None = None) -> Image.Image:
    """A view without randomness: orig, flip or a region, maybe mirrored (``base``: the resized image, when already made)."""
    if kind.startswith("region_"):
        region = resize_image(region_crop(img, kind.removesuffix("_flip")), pp)
        return F.horizontal_flip(region) if kind.endswith("_flip") else region
    base = base if base is not None else resize_image(img, pp)
    return base if kind == "orig" else F.horizontal_flip(base)


def _crop_transform(pp: Preprocessing) -> T.Compose:
    return T.Compose(
        [
            # Mild scale: scenes lose their meaning when cropped to a detail.
            T.RandomResizedCrop(pp.size, scale=(0.5, 1.0), ratio=(0.75, 1.333), interpolation=_INTERP[pp.interpolation], antialias=True),
            T.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.1),
        ]
    )


def make_views(img: Image.Image, kinds: list[str], pp: Preprocessing, seed: int) -> torch.Tensor:
    """All views of one decoded image as a (len(kinds), 3, size, size) float tensor.

    Random views are reproducible: the RNG is seeded from ``seed`` (per image).
    """
    base = resize_image(img, pp)
    crop = _crop_transform(pp)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        out = []
        for kind in kinds:
            if kind in FIXED_KINDS:
                v = _fixed_view(img, kind, pp, base)
            elif kind == "crop":
                v = crop(img)
            elif kind == "crop_flip":
                v = F.horizontal_flip(crop(img))
            else:
                raise ValueError(f"unknown view kind {kind!r}; choose from {VIEW_KINDS}")
            out.append(to_tensor(v, pp))
    finally:
        torch.random.set_rng_state(gen_state)
    return torch.stack(out)


def make_view(img: Image.Image, kinds: list[str], index: int, pp: Preprocessing, seed: int) -> torch.Tensor:
    """View ``index`` of :func:`make_views` alone, the same pixels at the cost of one view.

    The crops before it only draw their random parameters (the random streams
    advance as if they had been made); nothing else is computed.
    """
    crop = _crop_transform(pp)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for kind in kinds[:index]:
            if kind in ("crop", "crop_flip"):
                for t in crop.transforms:  # the parameters of a crop and its jitter depend on the image size only
                    t.make_params([img])
        kind = kinds[index]
        if kind in FIXED_KINDS:
            v = _fixed_view(img, kind, pp)
        elif kind in ("crop", "crop_flip"):
            v = crop(img) if kind == "crop" else F.horizontal_flip(crop(img))
        else:
            raise ValueError(f"unknown view kind {kind!r}; choose from {VIEW_KINDS}")
        return to_tensor(v, pp)
    finally:
        torch.random.set_rng_state(gen_state)


def image_seed(base_seed: int, index: int) -> int:
    """A per-image seed that does not depend on batch composition."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])
