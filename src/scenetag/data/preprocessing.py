"""How an image becomes a model input (stored in every checkpoint), and the view kinds training caches.

Plain data, no torch: :mod:`scenetag.data.transforms` does the work.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# The augmented views a training run can cache per image (see data.transforms.make_views).
# region_*: a fixed 2/3 x 2/3 crop at one corner of the image (they overlap in the middle), resized like
# "orig": small or off-centre things fill more of the frame (the multi-instance reading of a scene).
REGION_KINDS = ("region_tl", "region_tr", "region_bl", "region_br")
VIEW_KINDS = ("orig", "flip", "crop", "crop_flip") + REGION_KINDS


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input; stored in every checkpoint."""

    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    resize: str = "squash"  # squash: whole image to size x size (keeps every object in view); crop: timm-style centre crop
    crop_pct: float = 0.875

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)
