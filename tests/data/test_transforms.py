from __future__ import annotations

import numpy as np
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


def test_one_view_alone_equals_that_view_of_all_views():
    """The uncached baseline draws one view per image; it must be the pixels the cache holds."""
    from PIL import Image

    from scenetag.data.transforms import make_view

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    kinds = ["orig", "flip", "crop", "region_tr", "crop", "crop_flip", "region_bl", "crop_flip"]
    pp = Preprocessing(size=32)
    every = make_views(img, kinds, pp, seed=11)
    for i in range(len(kinds)):
        assert torch.equal(make_view(img, kinds, i, pp, seed=11), every[i]), kinds[i]


def test_region_views_are_the_four_overlapping_corner_crops():
    from scenetag.data.preprocessing import REGION_KINDS
    from scenetag.data.eval_views import region_crop

    im = Image.new("RGB", (60, 30))
    im.paste((255, 0, 0), (0, 0, 20, 10))  # a small red thing in the top-left ninth
    boxes = {kind: region_crop(im, kind) for kind in REGION_KINDS}
    assert all(b.size == (40, 20) for b in boxes.values())
    assert boxes["region_tl"].getpixel((0, 0)) == (255, 0, 0) and boxes["region_br"].getpixel((0, 0)) == (0, 0, 0)
    pp = Preprocessing(size=16)
    views = make_views(im, ["orig", *REGION_KINDS], pp, seed=0)
    torch.testing.assert_close(views[1], eval_tensor(boxes["region_tl"], pp))  # a region is resized like the whole image
    red = lambda x: float((x[0] > 0.9).float().mean())  # noqa: E731  share of the view the red thing fills (normalised 1.0 = 255)
    assert red(views[1]) > 2 * red(views[0])  # it fills more of its region than of the photo
    torch.testing.assert_close(views, make_views(im, ["orig", *REGION_KINDS], pp, seed=5))  # no randomness


def test_mirrored_regions_and_the_bag_prediction_makes():
    """A bag model's mirrored bag (flip TTA: every view flipped) is what region_*_flip caches for training."""
    from scenetag.data.preprocessing import REGION_FLIP_KINDS, REGION_KINDS

    im = Image.effect_noise((60, 30), 40).convert("RGB")
    pp = Preprocessing(size=16)
    views = make_views(im, [*REGION_KINDS, *REGION_FLIP_KINDS], pp, seed=0)
    torch.testing.assert_close(views[4:], views[:4].flip(-1))
    bag = eval_tensor(im, pp, ["orig", "region_tr"])
    assert bag.shape == (2, 3, 16, 16)
    torch.testing.assert_close(bag, make_views(im, ["orig", "region_tr"], pp, seed=3))
    torch.testing.assert_close(bag[0], eval_tensor(im, pp))
