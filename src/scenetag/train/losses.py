"""Losses for multi-label training: BCE (optionally smoothed / class-weighted / tolerant of label noise) and ASL."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import Config


class AsymmetricLoss(nn.Module):
    """ASL (Ridnik et al. 2021): focusing on hard negatives, clipping easy ones. Mean over elements."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        p_neg = (1 - p + self.clip).clamp(max=1) if self.clip > 0 else 1 - p
        loss = y * torch.log(p.clamp(min=self.eps)) + (1 - y) * torch.log(p_neg.clamp(min=self.eps))
        pt = p * y + p_neg * (1 - y)
        gamma = self.gamma_pos * y + self.gamma_neg * (1 - y)
        return -(loss * (1 - pt).pow(gamma)).mean()


class SmoothedBCE(nn.Module):
    """BCE with logits, with optional label smoothing and ``pos_weight``, and two ways to live with incomplete labels:

    * ``bootstrap`` (soft bootstrapping, Reed et al. 2015): the target is ``(1 - b) * label + b * p``,
      ``p`` the model's own (detached) probability, so a confident model is not pushed hard
      against a label it disputes;
    * ``ignore_negatives_above`` (a partial-label loss): a label not given (target 0) on which the
      model is above this probability is left out of the loss; a missing tag is not a true "no".
    """

    def __init__(self, smoothing: float = 0.0, pos_weight: torch.Tensor | None = None, bootstrap: float = 0.0, ignore_negatives_above: float = 0.0):
        super().__init__()
        self.smoothing, self.bootstrap, self.ignore_negatives_above = smoothing, bootstrap, ignore_negatives_above
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits).detach() if self.bootstrap or self.ignore_negatives_above else None  # the model's own view, no gradient
        keep = ~((y <= 1e-6) & (p > self.ignore_negatives_above)) if self.ignore_negatives_above else None
        if self.smoothing:
            y = y * (1 - self.smoothing) + self.smoothing / 2
        if self.bootstrap:
            y = (1 - self.bootstrap) * y + self.bootstrap * p
        if keep is None:  # the plain BCE, reduced in the same kernel as before these options (same numbers)
            return nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight, reduction="none")
        return (loss * keep).sum() / keep.sum().clamp(min=1)


def make_loss(cfg: Config, labels: np.ndarray) -> nn.Module:
    """The configured loss; ``pos_weight`` = negatives/positives per class from the training labels."""
    t = cfg.train
    if t.loss == "asl":
        return AsymmetricLoss(t.asl_gamma_neg, t.asl_gamma_pos, t.asl_clip)
    pos_weight = None
    if t.pos_weight:
        pos = labels.sum(0).clip(min=1)
        pos_weight = torch.tensor((len(labels) - pos) / pos, dtype=torch.float32)
    return SmoothedBCE(t.label_smoothing, pos_weight, t.bootstrap, t.ignore_negatives_above)

