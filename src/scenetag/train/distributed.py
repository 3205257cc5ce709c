"""Data-parallel training under ``torchrun`` and device selection.

Each rank caches and trains on its own shard of the training images; gradients
of the trainable parameters are averaged across ranks by hooks (the model runs
through ``forward_from``, which a ``DistributedDataParallel`` wrapper would not
see), so every rank takes identical optimizer steps. Validation predictions are
gathered from all ranks; only rank 0 writes files. ``gloo`` on CPU, ``nccl`` on
CUDA, chosen automatically.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(requested: str = "auto", local_rank: int = 0) -> str:
    """``auto``: CUDA (this rank's GPU), else Apple MPS, else CPU."""
    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"train.device={requested}: CUDA is not available on this machine (use auto or cpu)")
        return requested
    if torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group if WORLD_SIZE > 1 (no-op otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined (%s)", rank, world, backend)
    return DistInfo(rank, world, local_rank)


class GradSync:
    """Averages each trainable parameter's gradient over ranks as it is computed."""

    def __init__(self, model: torch.nn.Module, info: DistInfo):
        self.info = info
        self.active = True
        if info.enabled:
            for p in model.parameters():
                p.register_hook(self._hook)

    def _hook(self, grad: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return grad
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad / self.info.world


def average_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Average float buffers (BatchNorm running statistics) so all ranks hold the same model."""
    if not info.enabled:
        return
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= info.world


def gather_rows(order: np.ndarray, values: np.ndarray, n_total: int, info: DistInfo) -> np.ndarray:
    """Reassemble per-rank rows (``order``: their positions in the full array) on every rank."""
    if not info.enabled:
        out = np.zeros((n_total, values.shape[1]), dtype=values.dtype)
        out[order] = values
        return out
    parts: list = [None] * info.world
    dist.all_gather_object(parts, (order, values))
    out = np.zeros((n_total, values.shape[1]), dtype=values.dtype)
    for o, v in parts:
        out[o] = v
    return out


def broadcast(obj, info: DistInfo):
    """Rank 0's value of ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shard_of(n: int, info: DistInfo) -> np.ndarray:
    """Positions 0..n-1 that belong to this rank (interleaved, disjoint, covering)."""
    return np.arange(n)[info.rank :: info.world]
