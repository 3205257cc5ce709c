"""The fair baseline of activation caching: the same recipe, recomputing the frozen part every batch.

:class:`RecomputedActivations` answers exactly what :class:`~scenetag.train.cache.ActivationCache`
answers (the activation entering piece ``tap`` of given images and views), but
does the work a plain PyTorch or fastai loop does for every batch: decode the
image files, draw the view, and run the frozen pieces forward without gradients.
Boundaries, views, seeds and trainable parameters are the cached run's, so the
two differ only in where the frozen activations come from (``train.cache=false``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.images import open_image
from ..data.preprocessing import Preprocessing
from ..data.transforms import image_seed, make_view
from ..models.net import MultiLabelNet


class RecomputedActivations:
    """Activations at any piece boundary, recomputed from the image files on every call."""

    def __init__(self, model: MultiLabelNet, paths: Sequence[Path], ids: Sequence[int], kinds: list[str], pp: Preprocessing, seed: int, max_pixels: int | None, device: str = "cpu", workers: int = 2):
        self.model, self.paths, self.ids = model, list(paths), [int(i) for i in ids]
        self.kinds, self.pp, self.seed, self.max_pixels, self.device = list(kinds), pp, seed, max_pixels, device
        self._pool = ThreadPoolExecutor(workers)  # decoding releases the GIL

    def _decode(self, row: int):
        return open_image(self.paths[row], self.max_pixels)

    def pixels(self, images: np.ndarray, views: np.ndarray | int) -> torch.Tensor:
        views = np.broadcast_to(np.asarray(views), (len(images),))
        decoded = self._pool.map(self._decode, [int(i) for i in images])  # decoding overlaps in threads
        # Views in this thread: they reseed torch's global RNG per image, which threads would race on.
        # Only the view asked for is made, with the pixels the cache holds for it (same per-image seed).
        return torch.stack([make_view(img, self.kinds, int(v), self.pp, image_seed(self.seed, self.ids[int(i)])) for img, i, v in zip(decoded, images, views)])

    @torch.no_grad()
    def frozen_forward(self, tap: int, x: torch.Tensor) -> torch.Tensor:
        """pieces[:tap] of the model (frozen, eval mode); past the last piece, what the head sees."""
        pieces = self.model.pieces()
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        for _, piece in pieces[: min(tap, len(pieces))]:
            x = piece(x)
        return self.model.head_input(x) if tap == len(pieces) else x

    def get(self, tap: int, images: np.ndarray, views: np.ndarray | int) -> torch.Tensor:
        return self.frozen_forward(tap, self.pixels(images, views)).float().cpu()
