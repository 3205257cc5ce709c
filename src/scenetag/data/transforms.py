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

from .eval_views import eval_array, fixed_view, mirror, resize_image, to_array
from .preprocessing import FIXED_KINDS, VIEW_KINDS, Preprocessing

_INTERP = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def to_tensor(img: Image.Image, pp: Preprocessing) -> torch.Tensor:
    """uint8 PIL image (already size x size) -> normalised float CHW tensor (the same numbers as the torch-free path)."""
    return torch.from_numpy(to_array(img, pp))


def eval_tensor(img: Image.Image, pp: Preprocessing, bag: tuple[str, ...] | list[str] = ()) -> torch.Tensor:
    """The exact tensor prediction uses for one RGB image: (3, size, size), or (len(bag), 3, size, size) for a bag model."""
    return torch.from_numpy(eval_array(img, pp, bag))


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
                v = fixed_view(img, kind, pp, base)
            elif kind == "crop":
                v = crop(img)
            elif kind == "crop_flip":
                v = mirror(crop(img))
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
            v = fixed_view(img, kind, pp)
        elif kind in ("crop", "crop_flip"):
            v = crop(img) if kind == "crop" else mirror(crop(img))
        else:
            raise ValueError(f"unknown view kind {kind!r}; choose from {VIEW_KINDS}")
        return to_tensor(v, pp)
    finally:
        torch.random.set_rng_state(gen_state)


def image_seed(base_seed: int, index: int) -> int:
    """A per-image seed that does not depend on batch composition."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])
