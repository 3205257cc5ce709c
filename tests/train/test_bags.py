"""Bags of views in training and evaluation: which views are cached, how bags are drawn, a whole bag run."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from scenetag.checkpoint import load_model
from scenetag.data import load_dataset
from scenetag.data.preprocessing import Preprocessing, mirrored
from scenetag.errors import CheckpointError, ConfigError
from scenetag.models import build_model
from scenetag.train.bags import draw_bags, eval_bags, eval_kinds, train_kinds, train_slots
from scenetag.train.batches import bag_batch
from scenetag.train.cache import build_cache
from scenetag.train.recipe import train
from scenetag.train.recompute import RecomputedActivations

from ..conftest import tiny_cfg

BAG = "[orig, region_tl, region_br]"


def test_without_a_bag_nothing_changes(synth_dir):
    cfg = tiny_cfg(synth_dir)
    assert train_kinds(cfg) == cfg.train.views and train_slots(cfg) is None and eval_bags(cfg) is None
    assert eval_kinds(cfg) == ["orig", "flip"] and eval_kinds(tiny_cfg(synth_dir, **{"train.tta": "false"})) == ["orig"]


def test_bag_views_slots_and_mirrored_evaluation(synth_dir):
    cfg = tiny_cfg(synth_dir, **{"model.bag": BAG})
    kinds = train_kinds(cfg)
    assert kinds == ["orig", "flip", "crop", "region_tl", "region_br", "region_tl_flip", "region_br_flip"]
    slots = train_slots(cfg)
    assert [[kinds[v] for v in slot] for slot in slots] == [["orig", "flip", "crop"], ["region_tl", "region_tl_flip"], ["region_br", "region_br_flip"]]
    drawn = draw_bags(slots, 200, np.random.default_rng(0))
    assert drawn.shape == (200, 3) and all(set(drawn[:, j]) == set(slot) for j, slot in enumerate(slots))  # every choice occurs
    assert eval_kinds(cfg) == ["orig", "region_tl", "region_br", "flip", "region_tl_flip", "region_br_flip"]
    assert eval_bags(cfg).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert all(mirrored(mirrored(k)) == k for k in kinds)


@pytest.mark.parametrize("bag", [["region_tl", "orig"], ["orig", "crop"], ["orig", "region_tl", "region_tl"]])
def test_a_bag_is_orig_then_distinct_regions(synth_dir, bag):
    with pytest.raises(ConfigError, match="model.bag"):
        tiny_cfg(synth_dir, **{"model.bag": "[" + ", ".join(bag) + "]"})


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_cached_and_recomputed_bags_give_the_model_the_same_input(synth_dir, pool):
    ds = load_dataset(synth_dir).subset(range(5))
    torch.manual_seed(0)
    model = build_model("test_efficientnet", "none", 5, "csra", quiet=True, bag_pool=pool).eval()
    cfg = tiny_cfg(synth_dir, **{"model.bag": BAG})
    pp, ids = Preprocessing(size=48), list(range(5))
    taps = [model.boundary_for_fraction(0.5), len(model.pieces())]
    cache = build_cache(model, {"t": 1}, ds, train_kinds(cfg), taps, pp, seed=1, cache_dir=None, batch_size=8, engine="torch", dtype="float32", progress=False, ids=ids)
    recomputed = RecomputedActivations(model, ds.paths, ids, train_kinds(cfg), pp, seed=1, max_pixels=None)
    rows, views = np.arange(5), draw_bags(train_slots(cfg), 5, np.random.default_rng(3))
    with torch.no_grad():
        want = model(torch.stack([recomputed.pixels(rows, views[:, j]) for j in range(3)], dim=1))
        for tap in taps:
            torch.testing.assert_close(model.forward_from(tap, bag_batch(cache, tap, rows, views)), want, atol=1e-4, rtol=1e-4)


def test_a_bag_model_trains_predicts_from_images_and_exports(synth_dir, tmp_path):
    from scenetag.infer.export import export_onnx
    from scenetag.infer.outputs import read_probabilities
    from scenetag.infer.predictor import Predictor
    from scenetag.workflows.ensemble import make_ensemble

    cfg = tiny_cfg(synth_dir, **{"model.bag": BAG, "model.bag_pool": "attention", "train.lr_find": "false",
                                 "train.phases": "[{name: head, unfreeze: 0.0, epochs: 1, lr: 0.003, lr_mult: 1.0}, {name: top, unfreeze: 0.5, epochs: 1, lr: 0.002, lr_mult: 10.0}]"})  # fmt: skip
    run = tmp_path / "bag"
    train(cfg, run, progress=False)
    model, meta = load_model(run / "best.pt")
    assert meta["bag"] == ["orig", "region_tl", "region_br"] and meta["bag_pool"] == "attention" and model.bag_pool.kind == "attention"
    classes = meta["classes"]
    paths = [r["path"] for r in csv.DictReader(open(run / "test_predictions.csv"))][:6]

    def probabilities(model_file):
        return np.array([[r.probabilities[c] for c in classes] for r in Predictor(model_file, num_workers=0).predict(paths)])

    # From the image files (bag made, mirrored bag for TTA) = what the run scored from its cache (fp16).
    np.testing.assert_allclose(probabilities(run / "best.pt"), read_probabilities(run / "test_predictions.csv", classes)[:6], atol=2e-2)
    assert export_onnx(run / "best.pt", tmp_path / "bag.onnx")["max_abs_diff"] <= 1e-4
    np.testing.assert_allclose(probabilities(tmp_path / "bag.onnx"), probabilities(run / "best.pt"), atol=1e-4)
    with pytest.raises(CheckpointError, match="bag model"):
        make_ensemble([run / "best.pt", run / "best.pt"], tmp_path / "ens.pt")
    with pytest.raises(ConfigError, match="bag model"):
        train(tiny_cfg(synth_dir, **{"train.teacher": str(run / "best.pt")}), tmp_path / "student", progress=False)
