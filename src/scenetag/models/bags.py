"""Multi-instance pooling: one image is a bag of views (the whole photo and its corner regions);
the network scores each, and a pooling per label turns the bag's scores into the image's logit.

MIML's reading of a scene: a label is true if *some* region shows it, so a tree line
in a corner can carry ``trees`` without being outvoted by the rest of the photo.
``mean`` is plain averaging, ``max`` the strict MIL rule, ``lse`` a smooth max
between them, ``attention`` (Ilse et al. 2018, gated, one attention per label)
learns which instances to trust from their features.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ModelError

BAG_POOLS = ("mean", "max", "lse", "attention")
LSE_SHARPNESS = 4.0  # r of log-mean-exp pooling: 0 would be the mean, infinity the max


class BagPool(nn.Module):
    """Pools per-instance logits (B, V, classes) into image logits (B, classes).

    ``attention`` also needs the instances' features (B, V, F): its weights are
    ``softmax_v(w_c . (tanh(U h_v) * sigmoid(G h_v)))`` per label ``c``.
    """

    def __init__(self, kind: str, n_features: int, n_classes: int, hidden: int = 128):
        super().__init__()
        if kind not in BAG_POOLS:
            raise ModelError(f"unknown bag pooling {kind!r}; choose from {', '.join(BAG_POOLS)}")
        self.kind = kind
        if kind == "attention":
            self.content, self.gate = nn.Linear(n_features, hidden), nn.Linear(n_features, hidden)
            self.score = nn.Linear(hidden, n_classes)

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """Attention over the instances, per label: (B, V, classes), summing to 1 over V."""
        hidden = torch.tanh(self.content(features)) * torch.sigmoid(self.gate(features))
        return torch.softmax(self.score(hidden), dim=1)

    def forward(self, logits: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "mean":
            return logits.mean(dim=1)
        if self.kind == "max":
            return logits.max(dim=1).values
        if self.kind == "lse":
            r = LSE_SHARPNESS
            return (torch.logsumexp(r * logits, dim=1) - math.log(logits.shape[1])) / r
        if features is None:
            raise ModelError("attention pooling needs the instances' features")
        return (self.weights(features) * logits).sum(dim=1)
