"""Multi-label heads: what turns pooled backbone features into one logit per class."""
from __future__ import annotations

from torch import nn

from ..errors import ModelError

HEADS = ("reference", "linear")


def make_head(in_features: int, n_classes: int, kind: str = "reference", dropout: float = 0.5) -> nn.Module:
    """``reference``: fastai-style Linear 1/2 -> ReLU -> BN -> Dropout -> Linear 1/4 -> ... -> n; ``linear``: Dropout -> Linear."""
    if n_classes < 1:
        raise ModelError(f"a head needs at least one class, got n_classes={n_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"head dropout must be in [0, 1), got {dropout}")
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, n_classes))
    if kind != "reference":
        raise ModelError(f"unknown head {kind!r}; choose from {', '.join(HEADS)}")
    h1, h2 = in_features // 2, in_features // 4
    return nn.Sequential(
        nn.Linear(in_features, h1), nn.ReLU(inplace=True), nn.BatchNorm1d(h1), nn.Dropout(dropout),
        nn.Linear(h1, h2), nn.ReLU(inplace=True), nn.BatchNorm1d(h2), nn.Dropout(dropout),
        nn.Linear(h2, n_classes),
    )  # fmt: skip


