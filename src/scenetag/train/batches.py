"""Batches from the activation cache (one cached view, or one bag of views, per image per epoch), mixup, device helpers."""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

from ..errors import TrainingError
from ..models.net import MultiLabelNet
from .bags import draw_bags
from .cache import ActivationCache


MIN_BATCH = 2  # BatchNorm cannot train on a batch of one


def batches_per_epoch(n_images: int, batch_size: int) -> int:
    """Training steps in one epoch: the batches :func:`epoch_batches` yields (a last batch of one is dropped)."""
    full, rest = divmod(n_images, batch_size)
    return full + (rest >= MIN_BATCH) if batch_size >= MIN_BATCH else 0


def no_batch_error(n_images: int, batch_size: int) -> TrainingError:
    return TrainingError(f"no training batch of at least {MIN_BATCH} images ({n_images} training image(s), batch size {batch_size}); BatchNorm cannot train on one: add images or raise train.batch_size")


def bag_batch(cache: ActivationCache, tap: int, rows: np.ndarray, views: np.ndarray) -> torch.Tensor:
    """Activations of a bag per image, (images, instances, ...), for (images, instances) view indices."""
    return torch.stack([cache.get(tap, rows, views[:, j]) for j in range(views.shape[1])], dim=1)


def epoch_batches(cache: ActivationCache, tap: int, rows: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator, slots: list[np.ndarray] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch: every training image once, each with one of its cached views at random,
    or (``slots``, a bag model) with one view per instance slot (see :mod:`scenetag.train.bags`).

    ``y``: targets per image (n, classes), or per image and view (n, views, classes) when
    they depend on the view (distillation: the teacher's probabilities on that very view).
    """
    order = rng.permutation(len(rows))
    views = rng.integers(0, len(cache.kinds), size=len(rows)) if slots is None else draw_bags(slots, len(rows), rng)
    for s in range(0, len(order), batch_size):
        b = order[s : s + batch_size]
        if len(b) < MIN_BATCH:
            continue
        target = y[b, views[b]] if y.ndim == 3 else y[b]
        x = cache.get(tap, rows[b], views[b]) if slots is None else bag_batch(cache, tap, rows[b], views[b])
        yield x, torch.from_numpy(np.ascontiguousarray(target)).float()


def endless_batches(cache: ActivationCache, tap: int, rows: np.ndarray, y: np.ndarray, batch_size: int, seed: int, slots: list[np.ndarray] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Epoch after epoch (for the LR finder); an epoch with no batch of two images is an error, not an endless loop."""
    if not batches_per_epoch(len(rows), batch_size):
        raise no_batch_error(len(rows), batch_size)
    rng = np.random.default_rng(seed)
    while True:
        yield from epoch_batches(cache, tap, rows, y, batch_size, rng, slots)


def to_device(x: torch.Tensor, device: str) -> torch.Tensor:
    """Move a batch, feature maps in channels_last (what the model's convolutions expect)."""
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def autocast_ctx(amp: str, device: str):
    """Mixed precision on GPU (``bf16``/``fp16``); full precision on CPU, where it does not pay here."""
    if not amp or device == "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup on cached activations (manifold mixup): blend pairs of inputs and their label vectors."""
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1 - lam)  # keep the first sample dominant
    perm = torch.from_numpy(rng.permutation(len(x)))
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


@torch.no_grad()
def view_logits(model: MultiLabelNet, cache: ActivationCache, tap: int, rows: np.ndarray, batch_size: int = 128, device: str = "cpu", bags: np.ndarray | None = None) -> np.ndarray:
    """Logits of every cached view of the given rows, shape (n, views, classes);
    for a bag model, of every bag (``bags``: (bags, instances) view indices), shape (n, bags, classes)."""
    was = model.training
    model.eval()
    inputs = list(range(len(cache.kinds))) if bags is None else list(bags)
    logits = np.zeros((len(rows), len(inputs), model.n_classes), dtype=np.float64)
    for j, views in enumerate(inputs):
        for s in range(0, len(rows), batch_size):
            part = rows[s : s + batch_size]
            x = cache.get(tap, part, views) if bags is None else bag_batch(cache, tap, part, np.broadcast_to(views, (len(part), len(views))))
            logits[s : s + batch_size, j] = model.forward_from(tap, to_device(x, device)).double().cpu().numpy()
    model.train(was)
    return logits


def predict_cached(model: MultiLabelNet, cache: ActivationCache, tap: int, rows: np.ndarray, batch_size: int = 128, device: str = "cpu", bags: np.ndarray | None = None) -> np.ndarray:
    """Probabilities averaged over the cached views or bags (test-time augmentation), shape (n, classes)."""
    logits = view_logits(model, cache, tap, rows, batch_size, device, bags)
    return (1 / (1 + np.exp(-logits))).mean(axis=1)
