from __future__ import annotations

import torch
from PIL import Image

from scenetag.data.preprocessing import Preprocessing
from scenetag.data.transforms import eval_tensor, make_views


def _img():
    im = Image.new("RGB", (60, 40))
    im.paste((255, 0, 0), (0, 0, 30, 40))  # left half red
    return im


def test_views_shapes_flip_and_reproducible():
    pp = Preprocessing(size=32)
    v = make_views(_img(), ["orig", "flip", "crop", "crop_flip"], pp, seed=1)
    assert v.shape == (4, 3, 32, 32)
    torch.testing.assert_close(v[1], v[0].flip(-1))
    torch.testing.assert_close(v, make_views(_img(), ["orig", "flip", "crop", "crop_flip"], pp, seed=1))
    assert not torch.equal(v[2], make_views(_img(), ["crop"], pp, seed=2)[0])
    torch.testing.assert_close(v[0], eval_tensor(_img(), pp))


def test_normalisation_and_preprocessing_round_trip():
    pp = Preprocessing(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = eval_tensor(Image.new("RGB", (20, 20), (255, 0, 255)), pp)
    assert torch.allclose(x[0], torch.ones(16, 16)) and torch.allclose(x[1], -torch.ones(16, 16))
    assert Preprocessing.from_dict(pp.to_dict()) == pp


def test_crop_mode_keeps_centre():
    pp = Preprocessing(size=16, resize="crop", crop_pct=0.5)
    x = eval_tensor(_img(), pp)
    assert x.shape == (3, 16, 16)
