"""The fair baseline (train.cache=false): the same recipe with the frozen part recomputed every batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scenetag.data import load_dataset
from scenetag.data.preprocessing import Preprocessing
from scenetag.models import build_model
from scenetag.train.cache import build_cache
from scenetag.train.recipe import train
from scenetag.train.recompute import RecomputedActivations
from scenetag.train.setup import phase_boundaries

from ..conftest import tiny_cfg


@pytest.mark.parametrize("head", ["reference", "csra", "query"])
def test_recomputed_activations_equal_the_cache(synth_dir, tmp_path, head):
    """For every head (a spatial one caches the feature map at the last tap), and the cached forward is the model's."""
    ds = load_dataset(synth_dir).subset(range(6))
    torch.manual_seed(0)
    model = build_model("test_efficientnet", "none", 5, head, 0.5, quiet=True).eval()
    pp, kinds, ids = Preprocessing(size=48), ["orig", "flip", "crop"], list(range(10, 16))
    taps = [model.boundary_for_fraction(0.5), len(model.pieces())]
    cache = build_cache(model, {"t": 1}, ds, kinds, taps, pp, seed=3, cache_dir=None, batch_size=4, engine="torch", dtype="float32", progress=False, ids=ids)
    recomputed = RecomputedActivations(model, ds.paths, ids, kinds, pp, seed=3, max_pixels=None)
    rows, views = np.array([0, 3, 5]), np.array([2, 0, 1])
    for tap in taps:  # same pixels (views from the same per-image seeds), same frozen network
        torch.testing.assert_close(recomputed.get(tap, rows, views), cache.get(tap, rows, views), atol=1e-4, rtol=1e-4)
    assert cache.get(taps[-1], rows, views).dim() == (4 if head != "reference" else 2)
    with torch.no_grad():  # logits from either tap's cached activations are the whole network's on those pixels
        want = model(recomputed.pixels(rows, views))
        for tap in taps:
            torch.testing.assert_close(model.forward_from(tap, cache.get(tap, rows, views)), want, atol=1e-4, rtol=1e-4)


def test_uncached_run_trains_the_same_parameters_and_reaches_the_same_result(trained_run, synth_dir, tmp_path):
    cfg, _, cached = trained_run
    seen: dict[bool, list[set[str]]] = {}

    def record(flag):
        return lambda state, model: seen.setdefault(flag, []).append({n for n, p in model.named_parameters() if p.requires_grad})

    again = train(tiny_cfg(synth_dir), tmp_path / "c", progress=False, callbacks=[record(True)])
    uncached = train(tiny_cfg(synth_dir, **{"train.cache": "false"}), tmp_path / "u", progress=False, callbacks=[record(False)])
    assert again["metrics"] == cached["metrics"]
    assert len(seen[True]) == len(seen[False]) == 4 and seen[True] == seen[False]  # every epoch of every phase
    assert seen[True][0] < seen[True][-1]  # the head phase trains less than the unfreezing phase
    assert not (tmp_path / "u" / "cache").exists()
    # Same pixels, frozen activations in float32 instead of the cache's float16: the same run up to rounding.
    assert uncached["best_boundary"] == cached["best_boundary"]
    assert uncached["metrics"]["test"]["bce_loss"] == pytest.approx(cached["metrics"]["test"]["bce_loss"], abs=0.02)
    assert phase_boundaries(build_model("test_efficientnet", "none", 5, quiet=True), tiny_cfg(synth_dir, **{"train.cache": "false"})) == phase_boundaries(
        build_model("test_efficientnet", "none", 5, quiet=True), cfg
    )
