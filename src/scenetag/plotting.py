"""Matplotlib set-up shared by every module that draws: headless backend, atomic PNG saving."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_save  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig, path: Path | str, dpi: int = 100) -> Path:
    """Save ``fig`` as PNG via a temp file (matplotlib cannot infer the format from ``.tmp``) and close it."""
    atomic_save(path, lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)
