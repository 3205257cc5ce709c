"""Figures a notebook shows: grids of images with coloured captions, as matplotlib figures.

They are built without pyplot (no global figure list, whatever the backend) and show
themselves in Jupyter as PNG (:meth:`Figure._repr_png_`); ``fig.savefig(path)`` writes one.
The report's pictures (:mod:`scenetag.report.figures`) are files; these are objects to look at.
"""
from __future__ import annotations

import io
import textwrap
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure as _Figure
from PIL import Image

from ..data.preprocessing import Preprocessing

Caption = Sequence[tuple[str, str]]  # (text, colour) lines
CAPTION_PT = 10  # points between caption lines (font size 8)
WRAP = 30  # characters per caption line in a 2.1 inch cell


class Figure(_Figure):
    """A matplotlib figure that Jupyter displays as a PNG, with or without an inline backend."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()


def _lines(caption: Caption) -> list[tuple[str, str]]:
    return [(line, colour) for text, colour in caption for line in (textwrap.wrap(text, WRAP) or [""])]


def image_grid(images: Sequence[Image.Image], captions: Sequence[Caption], ncols: int = 5, title: str = "", row_labels: Sequence[str] = (), thumb: int = 200) -> Figure:
    """Images in rows of ``ncols``, each with its caption lines below; ``row_labels`` name the rows at the left."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    lines = [_lines(c) for c in captions]
    height = 1.75 + 0.16 * max((len(ls) for ls in lines), default=1)
    fig = Figure(figsize=(2.1 * ncols + (0.35 if row_labels else 0), height * nrows + (0.4 if title else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, lines):
        shown = img.copy()
        shown.thumbnail((thumb, thumb))
        ax.imshow(shown)
        for i, (text, colour) in enumerate(cap):
            ax.annotate(text, xy=(0.5, 0), xycoords="axes fraction", xytext=(0, -3 - CAPTION_PT * i), textcoords="offset points", ha="center", va="top", fontsize=8, color=colour)
    for r, label in enumerate(row_labels[:nrows]):
        axes[r, 0].text(-0.06, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center", fontsize=9, fontweight="bold")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def view_image(x: np.ndarray, pp: Preprocessing) -> Image.Image:
    """A normalised (3, size, size) model input back to the RGB picture the network sees."""
    rgb = np.asarray(x, dtype=np.float32).transpose(1, 2, 0) * np.array(pp.std, dtype=np.float32) + np.array(pp.mean, dtype=np.float32)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))
