"""Optimizer and schedule: discriminative LRs per layer group, AdamW, one-cycle."""
from __future__ import annotations

import numpy as np
import torch

from ..config import Config
from ..models.net import MultiLabelNet


def discriminative_groups(model: MultiLabelNet, k: int, lr: float, lr_mult: float, n_groups: int = 3) -> list[dict]:
    """Param groups for pieces[k:] (split into up to ``n_groups``) + head; LRs rise geometrically to ``lr``."""
    pieces = [m for _, m in model.pieces()[k:]]
    chunks = [c for c in np.array_split(np.arange(len(pieces)), min(n_groups, len(pieces))) if len(c)] if pieces else []
    groups = [{"params": [p for i in c for p in pieces[i].parameters()]} for c in chunks]
    groups.append({"params": model.head_parameters()})
    n = len(groups)
    for i, g in enumerate(groups):
        g["lr"] = lr / lr_mult ** ((n - 1 - i) / max(n - 1, 1)) if n > 1 else lr
    return groups


def make_optimizer(groups: list[dict], cfg: Config) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=groups[-1]["lr"], weight_decay=cfg.train.weight_decay, betas=(0.9, 0.99))


def one_cycle(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle policy: LR warms up then anneals; Adam's beta1 moves the opposite way."""
    total_steps = max(total_steps, 1)
    # torch divides by zero when pct_start * total_steps == 1 (a 4-step phase on a tiny data set).
    pct = 0.3 if total_steps == 4 else 0.25
    return torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[g["lr"] for g in opt.param_groups],
        total_steps=total_steps,
        pct_start=pct,
        div_factor=25.0,
        final_div_factor=1e4,
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )

