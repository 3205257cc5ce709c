"""What a notebook shows of a run's images: grids with coloured captions (the report's :func:`image_grid`,
a figure that Jupyter displays as PNG) of the pictures the network sees.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..data.preprocessing import Preprocessing
from ..report.figures import ShownFigure as Figure
from ..report.figures import image_grid

__all__ = ["Figure", "image_grid", "view_image"]


def view_image(x: np.ndarray, pp: Preprocessing) -> Image.Image:
    """A normalised (3, size, size) model input back to the RGB picture the network sees."""
    rgb = np.asarray(x, dtype=np.float32).transpose(1, 2, 0) * np.array(pp.std, dtype=np.float32) + np.array(pp.mean, dtype=np.float32)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
