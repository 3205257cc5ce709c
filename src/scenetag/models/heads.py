"""Multi-label heads: what turns backbone features into one logit per class.

Pooled heads (``reference``, ``linear``) see one globally averaged vector per image.
Spatial heads (``csra``, ``query``) see the last feature *map* (B, C, H, W), so a
label can rest on a small part of the photo (a tree line, water in a corner):
the multi-instance reading of a scene. A head says which it is with ``spatial``;
the network and the activation cache feed it accordingly.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ModelError

POOLED_HEADS = ("reference", "linear")
SPATIAL_HEADS = ("csra", "query")
HEADS = POOLED_HEADS + SPATIAL_HEADS


class CSRAHead(nn.Module):
    """Class-specific residual attention (Zhu & Wu, ICCV 2021).

    A 1x1 classifier gives a score map per class; the logit is its spatial mean
    (= a linear head on average-pooled features) plus ``lam`` times an
    attention-weighted sum, the attention being the softmax over locations of
    ``temperature`` x that class's scores (temperature -> infinity: max pooling).
    Unlike the paper, the classifier weights are not normalised: with ``lam`` 0 the
    head then *is* the linear head, which a test checks.
    """

    spatial = True

    def __init__(self, in_channels: int, n_classes: int, lam: float = 0.1, temperature: float = 1.0, dropout: float = 0.5):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(in_channels, n_classes, 1)
        self.lam, self.temperature = float(lam), float(temperature)

    def forward(self, feat_map: torch.Tensor) -> torch.Tensor:
        scores = self.classifier(self.drop(feat_map)).flatten(2)  # (B, classes, H*W)
        base = scores.mean(dim=2)
        if self.lam == 0:
            return base
        attention = torch.softmax(self.temperature * scores, dim=2)
        return base + self.lam * (attention * scores).sum(dim=2)


class QueryHead(nn.Module):
    """ML-Decoder-style head (Ridnik et al. 2023): one learned query per class cross-attends to the map.

    Locations become ``dim``-wide tokens; each class query gathers the tokens it needs
    (multi-head attention, no self-attention between queries), goes through a small
    feed-forward block, and its own linear map (group FC) gives that class's logit.
    Written with plain matrix products so it exports to ONNX as it is.
    """

    spatial = True

    def __init__(self, in_channels: int, n_classes: int, dim: int = 256, n_heads: int = 4, dropout: float = 0.5):
        super().__init__()
        if dim % n_heads:
            raise ModelError(f"query head: dim {dim} is not divisible by {n_heads} attention heads")
        self.n_heads = n_heads
        self.drop = nn.Dropout(dropout)
        self.embed = nn.Sequential(nn.Conv2d(in_channels, dim, 1), nn.ReLU(inplace=True))
        self.queries = nn.Parameter(torch.randn(n_classes, dim) * dim**-0.5)
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Linear(2 * dim, dim))
        self.out_weight = nn.Parameter(torch.randn(n_classes, dim) * dim**-0.5)
        self.out_bias = nn.Parameter(torch.zeros(n_classes))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """(..., n, dim) -> (..., heads, n, dim / heads)."""
        return t.unflatten(-1, (self.n_heads, -1)).transpose(-3, -2)

    def forward(self, feat_map: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(self.drop(feat_map)).flatten(2).transpose(1, 2)  # (B, H*W, dim)
        q = self._split(self.to_q(self.queries))  # (heads, classes, d)
        k, v = self._split(self.to_k(tokens)), self._split(self.to_v(tokens))  # (B, heads, H*W, d)
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (B, heads, classes, H*W)
        gathered = (attention @ v).transpose(1, 2).flatten(2)  # (B, classes, dim)
        x = self.norm1(self.queries + gathered)
        x = self.norm2(x + self.ffn(x))
        return (x * self.out_weight).sum(dim=-1) + self.out_bias


# The settings each head takes besides dropout (ModelConfig.head_options() names them the same way).
HEAD_OPTIONS = {"csra": ("csra_lambda", "csra_temperature")}


def make_head(in_features: int, n_classes: int, kind: str = "reference", dropout: float = 0.5, **options: float) -> nn.Module:
    """``reference``: fastai-style Linear 1/2 -> ReLU -> BN -> Dropout -> Linear 1/4 -> ... -> n; ``linear``: Dropout -> Linear;
    ``csra`` / ``query``: spatial heads on the feature map (see their classes)."""
    unknown = sorted(set(options) - set(HEAD_OPTIONS.get(kind, ())))
    if unknown:
        raise ModelError(f"head {kind!r} takes no option(s) {unknown}")
    if n_classes < 1:
        raise ModelError(f"a head needs at least one class, got n_classes={n_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"head dropout must be in [0, 1), got {dropout}")
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, n_classes))
    if kind == "csra":
        return CSRAHead(in_features, n_classes, options.get("csra_lambda", 0.1), options.get("csra_temperature", 1.0), dropout)
    if kind == "query":
        return QueryHead(in_features, n_classes, dropout=dropout)
    if kind != "reference":
        raise ModelError(f"unknown head {kind!r}; choose from {', '.join(HEADS)}")
    h1, h2 = in_features // 2, in_features // 4
    return nn.Sequential(
        nn.Linear(in_features, h1), nn.ReLU(inplace=True), nn.BatchNorm1d(h1), nn.Dropout(dropout),
        nn.Linear(h1, h2), nn.ReLU(inplace=True), nn.BatchNorm1d(h2), nn.Dropout(dropout),
        nn.Linear(h2, n_classes),
    )  # fmt: skip


def is_spatial(head: nn.Module) -> bool:
    return bool(getattr(head, "spatial", False))
