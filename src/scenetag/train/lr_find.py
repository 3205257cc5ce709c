"""Learning-rate finder (Smith 2015, fastai style): exponential sweep, restore state afterwards."""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import TrainingError

log = logging.getLogger(__name__)


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float  # "valley" (fastai's default)
    steepest: float
    min_loss_lr: float

    def to_dict(self) -> dict:
        return {"lrs": self.lrs, "losses": self.losses, "suggestion": self.suggestion, "steepest": self.steepest, "min_loss_lr": self.min_loss_lr}


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley rule: the LR at the middle of the longest descending stretch of the loss curve.

    (fastai's code steps a third plus a sixth of the stretch in, i.e. about its midpoint.)
    """
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])


def _sweep(optimizer: torch.optim.Optimizer, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], start_lr: float, end_lr: float, steps: int, diverge: float, beta: float) -> tuple[list[float], list[float]]:
    """(LRs, smoothed losses) of an exponential sweep; stops at a non-finite or diverging loss."""
    base = [g["lr"] for g in optimizer.param_groups]
    ratios = [b / max(base) for b in base]
    mult = (end_lr / start_lr) ** (1 / max(steps - 1, 1))
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    for step in range(steps):
        x, y = next(batches)
        lr = start_lr * mult**step
        for g, r in zip(optimizer.param_groups, ratios):
            g["lr"] = lr * r
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(x, y)
        loss.backward()
        optimizer.step()
        raw = float(loss.detach())
        if not math.isfinite(raw):
            break
        avg = beta * avg + (1 - beta) * raw
        smoothed = avg / (1 - beta ** (step + 1))  # bias-corrected running mean
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if step > 5 and smoothed > diverge * best:
            break
    return lrs, losses


def _result(lrs: list[float], losses: list[float]) -> LRFindResult:
    grads = np.gradient(np.array(losses), np.log(np.array(lrs)))
    skip = min(3, len(lrs) - 1)  # the first few points are noisy for the steepest-descent estimate
    steepest = float(lrs[skip + int(np.argmin(grads[skip:]))])
    return LRFindResult(lrs, losses, valley(lrs, losses), steepest, float(lrs[int(np.argmin(losses))]))


def lr_find(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    steps: int = 60,
    diverge: float = 4.0,
    beta: float = 0.9,
) -> LRFindResult:
    """Sweep the LR exponentially from ``start_lr`` to ``end_lr`` over ``steps`` batches.

    Param groups keep their LR ratios (discriminative LRs): the sweep sets the
    *largest* group's LR. Stops when the smoothed loss exceeds ``diverge`` x its
    minimum. Model and optimizer state are restored exactly afterwards.
    """
    forward = forward or model
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    base = [g["lr"] for g in optimizer.param_groups]
    was_training = model.training
    model.train()
    try:
        lrs, losses = _sweep(optimizer, batches, lambda x, y: loss_fn(forward(x), y), start_lr, end_lr, steps, diverge, beta)
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
        for g, b in zip(optimizer.param_groups, base):
            g["lr"] = b
        model.train(was_training)
    if len(lrs) < 5:
        raise TrainingError(f"LR finder: the loss was not finite after {len(lrs)} step(s) from LR {start_lr:g}; lower the start LR or check the data")
    result = _result(lrs, losses)
    log.info("LR finder: valley %.2e, steepest %.2e, min loss at %.2e", result.suggestion, result.steepest, result.min_loss_lr)
    return result
