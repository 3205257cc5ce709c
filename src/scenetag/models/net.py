"""The multi-label network: backbone pieces -> global pool (or the feature map, for a spatial head) -> head.

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
from .bags import BagPool
from .heads import POOLED_HEADS, is_spatial, make_head


class MultiLabelNet(nn.Module):
    """Backbone pieces -> global pool -> head; logits out (sigmoid gives probabilities).

    A spatial head (``head.spatial``) takes the last feature map instead of the pooled vector.
    With ``bag_pool`` the network is a multi-instance model: its input holds a bag of views per
    image, (B, V, ...), each instance is scored, and the pool turns the bag's logits into the image's.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, backbone_name: str, n_classes: int, bag_pool: BagPool | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.bag_pool = bag_pool
        self.backbone_name = backbone_name
        self.n_classes = n_classes
        self.num_features = pooled_width(backbone)
        self.spatial = is_spatial(head)
        self._pieces = backbone_pieces(backbone)
        self._frozen_until = 0
        # Fine-tuning a few hundred images: batch statistics are noisy and shift the
        # features the head was trained on, so backbone BatchNorm can stay in eval mode.
        self.freeze_bn = False

    def pieces(self) -> list[tuple[str, nn.Module]]:
        return self._pieces

    def head_input(self, feat_map: torch.Tensor) -> torch.Tensor:
        """What the head sees: the pooled features, or the map itself for a spatial head (what caches hold at the last tap)."""
        return feat_map if self.spatial else self.backbone.forward_head(feat_map, pre_logits=True)

    def _head_input_from(self, i: int, x: torch.Tensor) -> torch.Tensor:
        n = len(self._pieces)
        if not 0 <= i <= n:
            raise ModelError(f"piece index {i} out of range 0..{n}")
        if i < n:
            for _, piece in self._pieces[i:]:
                x = piece(x)
            x = self.head_input(x)
        return x

    def forward_from(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Logits from the activation entering piece ``i`` (``i == len(pieces)``: the head's input).

        A bag model takes (B, V, ...) here: V instances per image, pooled into one logit per label.
        """
        if self.bag_pool is None:
            return self.head(self._head_input_from(i, x))
        bag_shape = x.shape[:2]
        instances = x.flatten(0, 1)
        if instances.dim() == 4:
            instances = instances.contiguous(memory_format=torch.channels_last)
        features = self._head_input_from(i, instances)
        logits = self.head(features).unflatten(0, bag_shape)
        if self.bag_pool.kind != "attention":
            return self.bag_pool(logits)
        pooled = features if features.dim() == 2 else features.mean(dim=(2, 3))  # a spatial head's map, averaged
        return self.bag_pool(logits, pooled.unflatten(0, bag_shape))

    def head_parameters(self) -> list[nn.Parameter]:
        """What always trains: the head, and the bag pooling when there is one."""
        return list(self.head.parameters()) + (list(self.bag_pool.parameters()) if self.bag_pool is not None else [])

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
        for p in self.head_parameters():
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


def build_model(backbone: str = "lite0", weights: str = "default", n_classes: int = 5, head: str = "reference", dropout: float = 0.5, quiet: bool = False, head_options: dict | None = None, bag_pool: str = "") -> MultiLabelNet:
    """Backbone with offline weights + a new multi-label head (``head_options``: e.g. CSRA's lambda),
    and a multi-instance pooling over a bag of views per image when ``bag_pool`` is set."""
    bb = build_backbone(backbone, weights, quiet=quiet)
    width = pooled_width(bb) if head in POOLED_HEADS else int(bb.num_features)  # a spatial head sees the map's channels
    pool = BagPool(bag_pool, width, n_classes) if bag_pool else None
    return MultiLabelNet(bb, make_head(width, n_classes, head, dropout, **(head_options or {})), backbone, n_classes, pool)


def model_from_spec(spec: dict, n_classes: int) -> MultiLabelNet:
    """The untrained network a checkpoint (or an ensemble member) describes; weights are loaded separately."""
    return build_model(spec["backbone"], "none", n_classes, spec["head"], spec.get("dropout", 0.5), quiet=True, head_options=spec.get("head_options"), bag_pool=spec.get("bag_pool", ""))



def model_preprocessing(model: MultiLabelNet, image_size: int = 0) -> Preprocessing:
    """The backbone's own preprocessing (timm pretrained config), optionally at another size."""
    d = default_preprocessing(model.backbone)  # resnet50 is built from the tv_in1k cfg: torchvision's preprocessing
    if image_size:
        d["size"] = image_size
    return Preprocessing(**d)
