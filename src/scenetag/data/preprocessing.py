"""How an image becomes a model input (stored in every checkpoint), and the view kinds training caches.

Plain data, no torch: :mod:`scenetag.data.transforms` does the work.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# The augmented views a training run can cache per image (see data.transforms.make_views).
# region_*: a fixed 2/3 x 2/3 crop at one corner of the image (they overlap in the middle), resized like
# "orig": small or off-centre things fill more of the frame (the multi-instance reading of a scene).
REGION_KINDS = ("region_tl", "region_tr", "region_bl", "region_br")
REGION_FLIP_KINDS = tuple(f"{kind}_flip" for kind in REGION_KINDS)  # a region, mirrored (training augmentation of bags)
FIXED_KINDS = ("orig", "flip") + REGION_KINDS + REGION_FLIP_KINDS  # no randomness: what prediction can compute too
VIEW_KINDS = ("orig", "flip", "crop", "crop_flip") + REGION_KINDS + REGION_FLIP_KINDS
# A bag (multi-instance model): the whole image plus regions, each scored by the network, the scores pooled per label.
BAG_KINDS = ("orig",) + REGION_KINDS


def mirrored(kind: str) -> str:
    """The fixed view showing the same pixels mirrored left-right (``flip`` of a bag's instance)."""
    if kind in ("orig", "flip"):
        return "flip" if kind == "orig" else "orig"
    return kind.removesuffix("_flip") if kind.endswith("_flip") else f"{kind}_flip"


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
