"""Notebook figures: image grids that show themselves as PNG, and model inputs turned back into pictures."""
from __future__ import annotations

import numpy as np
from PIL import Image

from scenetag.data.eval_views import to_array
from scenetag.data.preprocessing import Preprocessing
from scenetag.notebook.figures import Figure, image_grid, view_image


def test_a_grid_has_a_cell_per_image_and_renders_as_png():
    images = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue")]
    fig = image_grid(images, [[("a", "black")], [("b", "green"), ("c " * 30, "red")], []], ncols=2, title="t", row_labels=["r1", "r2"])
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # 2 x 2, the fourth cell empty
    assert [t.get_text() for t in fig.axes[1].texts][:2] == ["b", "c c c c c c c c c c c c c c c"]  # long captions wrap
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_view_image_undoes_the_normalisation():
    pp = Preprocessing(size=8, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    back = np.asarray(view_image(to_array(Image.fromarray(pixels), pp), pp))
    assert np.abs(back.astype(int) - pixels).max() <= 1
