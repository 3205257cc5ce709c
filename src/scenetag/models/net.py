"""The multi-label network: backbone pieces -> global pool -> head.

Training a suffix ``pieces[k:]`` on cached activations of ``pieces[:k]`` is what
makes the recipe fast; unfreezing fractions are counted in backbone
parameters, like fastai's layer groups.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..data.preprocessing import Preprocessing
from ..errors import ModelError
from .backbones import backbone_pieces, build_backbone, default_preprocessing, pooled_width
from .heads import make_head


class MultiLabelNet(nn.Module):
    """Backbone pieces -> global pool -> head; logits out (sigmoid gives probabilities)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, backbone_name: str, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_name = backbone_name
        self.n_classes = n_classes
        self.num_features = pooled_width(backbone)
        self._pieces = backbone_pieces(backbone)
        self._frozen_until = 0
        # Fine-tuning a few hundred images: batch statistics are noisy and shift the
        # features the head was trained on, so backbone BatchNorm can stay in eval mode.
        self.freeze_bn = False

    def pieces(self) -> list[tuple[str, nn.Module]]:
        return self._pieces

    def pool_features(self, feat_map: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(feat_map, pre_logits=True)

    def forward_from(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Logits from the activation entering piece ``i`` (``i == len(pieces)``: pooled features)."""
        n = len(self._pieces)
        if not 0 <= i <= n:
            raise ModelError(f"piece index {i} out of range 0..{n}")
        if i < n:
            for _, piece in self._pieces[i:]:
                x = piece(x)
            x = self.pool_features(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(0, x)

    def piece_params(self) -> list[int]:
        return [sum(p.numel() for p in m.parameters()) for _, m in self._pieces]

    def boundary_for_fraction(self, frac: float) -> int:
        """Piece index k such that pieces[k:] hold about ``frac`` of the backbone's parameters.

        Fractions count parameters (like fastai's layer groups) and snap to the piece
        boundary closest to ``frac``; ties go to the larger k (fewer trainable). 0 -> len(pieces).
        """
        if not (math.isfinite(frac) and 0.0 <= frac <= 1.0):
            raise ModelError(f"unfreeze fraction must be in [0, 1], got {frac}")
        if frac == 0:
            return len(self._pieces)
        counts = self.piece_params()
        total = sum(counts)
        fracs = [sum(counts[k:]) / total for k in range(len(counts))]
        return min(range(len(counts)), key=lambda k: (abs(fracs[k] - frac), -k))

    def freeze_until(self, k: int) -> None:
        """Freeze pieces[:k] (kept in eval mode, so BatchNorm statistics stay pretrained)."""
        if not 0 <= k <= len(self._pieces):
            raise ModelError(f"piece index {k} out of range 0..{len(self._pieces)}")
        self._frozen_until = k
        for j, (_, m) in enumerate(self._pieces):
            for p in m.parameters():
                p.requires_grad = j >= k
        for p in self.head.parameters():
            p.requires_grad = True
        self.train(self.training)

    def train(self, mode: bool = True) -> "MultiLabelNet":
        super().train(mode)
        for _, m in self._pieces[: self._frozen_until]:
            m.eval()
        if self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def build_model(backbone: str = "lite0", weights: str = "default", n_classes: int = 5, head: str = "reference", dropout: float = 0.5, quiet: bool = False) -> MultiLabelNet:
    """Backbone with offline weights + a new multi-label head."""
    bb = build_backbone(backbone, weights, quiet=quiet)
    return MultiLabelNet(bb, make_head(pooled_width(bb), n_classes, head, dropout), backbone, n_classes)



def model_preprocessing(model: MultiLabelNet, image_size: int = 0) -> Preprocessing:
    """The backbone's own preprocessing (timm pretrained config), optionally at another size."""
    d = default_preprocessing(model.backbone)  # resnet50 is built from the tv_in1k cfg: torchvision's preprocessing
    if image_size:
        d["size"] = image_size
    return Preprocessing(**d)
