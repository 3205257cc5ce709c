"""The torch-free prediction views are torchvision's, bit for bit (so every engine sees the same pixels)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from scenetag.data.eval_views import RESAMPLE, _center_crop, eval_array, fixed_view, resize_image, to_array
from scenetag.data.preprocessing import Preprocessing
from scenetag.data.transforms import _INTERP


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _torchvision_resize(img: Image.Image, pp: Preprocessing) -> Image.Image:
    interp = _INTERP[pp.interpolation]
    if pp.resize == "squash":
        return F.resize(img, [pp.size, pp.size], interpolation=interp, antialias=True)
    return F.center_crop(F.resize(img, int(round(pp.size / pp.crop_pct)), interpolation=interp, antialias=True), [pp.size, pp.size])


@pytest.mark.parametrize("resize", ["squash", "crop"])
@pytest.mark.parametrize("interpolation", sorted(RESAMPLE))
@pytest.mark.parametrize("wh", [(61, 37), (37, 61), (40, 40), (17, 90), (224, 224)])
def test_resizing_is_torchvisions_exactly(resize, interpolation, wh):
    pp = Preprocessing(size=24, resize=resize, interpolation=interpolation, crop_pct=0.8)
    img = _photo(*wh)
    assert np.array_equal(np.asarray(resize_image(img, pp)), np.asarray(_torchvision_resize(img, pp)))


@pytest.mark.parametrize("wh", [(10, 30), (30, 10), (8, 8)])
def test_a_crop_larger_than_the_image_pads_like_torchvision(wh):
    img = _photo(*wh, seed=3)
    assert np.array_equal(np.asarray(_center_crop(img, 12)), np.asarray(F.center_crop(img, [12, 12])))


def test_normalisation_is_torchvisions_exactly():
    pp = Preprocessing(size=20, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    img = _photo(20, 20, seed=1)
    expected = F.normalize(F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True), list(pp.mean), list(pp.std))
    got = to_array(img, pp)
    assert got.dtype == np.float32 and got.shape == (3, 20, 20)
    assert np.array_equal(got, expected.numpy())


def test_views_and_bags():
    pp = Preprocessing(size=16)
    img = _photo(50, 30, seed=2)
    flip = fixed_view(img, "flip", pp)
    assert np.array_equal(np.asarray(flip), np.asarray(F.horizontal_flip(resize_image(img, pp))))
    bag = eval_array(img, pp, ["orig", "region_tl_flip"])
    assert bag.shape == (2, 3, 16, 16)
    assert np.array_equal(bag[0], eval_array(img, pp)) and np.array_equal(bag[1], to_array(fixed_view(img, "region_tl_flip", pp), pp))
