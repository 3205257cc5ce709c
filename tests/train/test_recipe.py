from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch

from scenetag.checkpoint import load_model, read_checkpoint
from scenetag.config import load_config
from scenetag.data.preprocessing import Preprocessing
from scenetag.errors import ConfigError
from scenetag.train.recipe import train

from ..conftest import tiny_cfg


def test_run_folder_is_complete(trained_run):
    cfg, run, result = trained_run
    for name in ["config.yaml", "versions.json", "seed", "split.json", "metrics.csv", "curves.png", "best.pt", "last.pt", "metrics.json", "lr_find_1_head.png", "lr_find_1_head.json", "test_predictions.csv"]:
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["phase"] for r in rows] == ["head", "head", "top", "top"]
    assert all(float(r["train_loss"]) > 0 for r in rows)
    m = result["metrics"]["test"]
    assert 0 <= m["samples_f1"] <= 1 and len(m["per_label"]) == 5
    assert load_config(run / "config.yaml") == cfg
    assert not list(run.glob("**/*.tmp"))


def test_checkpoint_describes_itself_and_round_trips(trained_run, synth_dir):
    _, run, result = trained_run
    model, meta = load_model(run / "best.pt")
    assert meta["classes"] == ["desert", "mountains", "sea", "sunset", "trees"]
    assert meta["preprocessing"]["size"] == 48 and meta["backbone"] == "test_efficientnet"
    assert meta["thresholds"] == pytest.approx(result["thresholds"])
    assert meta["format_version"] == 1 and "config" in meta and "test" in meta["metrics"]
    # Same probabilities from images (no cache) as the run's evaluation from the cache.
    from PIL import Image

    from scenetag.data.transforms import eval_tensor

    pp = Preprocessing.from_dict(meta["preprocessing"])
    rows = list(csv.DictReader(open(run / "test_predictions.csv")))[:4]
    for r in rows:
        x_o = eval_tensor(Image.open(r["path"]).convert("RGB"), pp)
        with torch.no_grad():
            probs = (torch.sigmoid(model(x_o[None])) + torch.sigmoid(model(x_o.flip(-1)[None]))) / 2
        want = [float(r[f"p_{c}"]) for c in meta["classes"]]
        # fp16 cache vs fp32 images: close, not bit-equal
        np.testing.assert_allclose(probs[0].numpy(), want, atol=2e-2)


def test_same_seed_same_metrics(trained_run, synth_dir, tmp_path):
    cfg, _, result = trained_run
    again = train(copy.deepcopy(cfg), tmp_path / "again", progress=False)
    assert again["metrics"]["test"]["samples_f1"] == result["metrics"]["test"]["samples_f1"]
    assert again["metrics"]["test"]["bce_loss"] == pytest.approx(result["metrics"]["test"]["bce_loss"], abs=1e-9)


def test_resume_reaches_same_result(trained_run, tmp_path):
    cfg, run, result = trained_run

    def interrupt_after_three(state, model):
        if len(state.history) == 3:  # killed in phase 2, after its first epoch was saved
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(copy.deepcopy(cfg), part, progress=False, callbacks=[interrupt_after_three])
    st = read_checkpoint(part / "last.pt")["train_state"]
    assert (st["phase"], st["epoch"]) == (1, 1)
    resumed = train(None, part, resume=True, progress=False)
    assert resumed["metrics"]["test"]["samples_f1"] == result["metrics"]["test"]["samples_f1"]
    assert resumed["metrics"]["test"]["bce_loss"] == pytest.approx(result["metrics"]["test"]["bce_loss"], abs=1e-9)
    assert len(list(csv.DictReader(open(part / "metrics.csv")))) == 4


def test_sweep_in_fixed_lr_phase_is_recorded_and_changes_nothing(trained_run, synth_dir, tmp_path):
    cfg, run, result = trained_run
    # The shared run sweeps in both phases; phase 2 has a fixed LR, which is the one used.
    swept = json.loads((run / "lr_find_2_top.json").read_text())
    assert swept["used"] == 0.002 and swept["fixed"] is True and (run / "lr_find_2_top.png").is_file()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert {float(r["lr"]) for r in rows if r["phase"] == "top"} == {0.002}
    off = train(tiny_cfg(synth_dir, **{"train.lr_find": "false"}), tmp_path / "off", progress=False)
    assert not (tmp_path / "off" / "lr_find_2_top.json").exists() and (tmp_path / "off" / "lr_find_1_head.json").exists()
    assert off["metrics"]["test"]["bce_loss"] == pytest.approx(result["metrics"]["test"]["bce_loss"], abs=1e-9)


def test_select_by_val_loss_keeps_the_lowest_loss_epoch(trained_run, synth_dir, tmp_path):
    _, run, by_f1 = trained_run
    losses = [float(r["val_loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]
    # Same run selected by samples-F1 keeps another epoch, so this test can tell the modes apart.
    assert by_f1["metrics"]["val"]["bce_loss"] > min(losses) + 1e-4
    res = train(tiny_cfg(synth_dir, **{"train.select": "loss"}), tmp_path / "sel", progress=False)
    assert [float(r["val_loss"]) for r in csv.DictReader(open(tmp_path / "sel" / "metrics.csv"))] == losses
    assert res["metrics"]["val"]["bce_loss"] == pytest.approx(min(losses), abs=1e-5)
    with pytest.raises(ConfigError, match="train.select"):
        load_config(None, ["train.select=accuracy"])


def test_existing_run_is_not_overwritten(trained_run):
    cfg, run, _ = trained_run
    with pytest.raises(ConfigError, match="already holds a (finished )?run"):
        train(cfg, run, progress=False)


def test_without_val_the_last_epoch_of_the_last_phase_is_kept(synth_dir, tmp_path):
    """data.val=0 (train on everything but test): best.pt must be the final weights, not the end of phase 1."""
    from scenetag.train.cv import cross_validate
    from scenetag.train.recipe import weights_digest

    cfg = tiny_cfg(synth_dir, **{"data.val": 0.0, "train.lr_find": "false"})
    res = train(cfg, tmp_path / "r", progress=False)
    best, _ = load_model(tmp_path / "r" / "best.pt")
    last, _ = load_model(tmp_path / "r" / "last.pt")
    assert weights_digest(best) == weights_digest(last)
    assert res["best_boundary"] == read_checkpoint(tmp_path / "r" / "last.pt")["meta"]["boundary"] < len(best.pieces())
    assert "val" not in res["metrics"] and res["thresholds"] == [0.5] * 5
    cv = cross_validate(cfg, tmp_path / "cv", k=2, progress=False)  # K-fold without a val part
    assert len(cv["folds"]) == 2 and all(not json.loads((tmp_path / "cv" / f"fold{i}" / "split.json").read_text())["val"] for i in (1, 2))




def test_diverging_run_stops_with_one_line(synth_dir, tmp_path):
    from scenetag.errors import TrainingError

    cfg = tiny_cfg(synth_dir, **{"train.lr_find": "false", "train.weight_decay": 1e30,
                                 "train.phases": "[{name: head, unfreeze: 0.0, epochs: 3, lr: 1.0e+6, lr_mult: 1.0}]"})  # fmt: skip
    with pytest.raises(TrainingError, match=r"head \d/3: the training loss became (nan|inf)"):
        train(cfg, tmp_path / "r", progress=False)


@pytest.mark.parametrize("head", ["csra", "query"])
def test_a_spatial_head_trains_on_cached_maps_and_its_checkpoint_predicts_exports_and_ensembles(synth_dir, tmp_path, head):
    """The head phase caches the feature map (another cache key than pooled features); the checkpoint rebuilds the head
    with its options, predicts from images what the run scored from its cache, and exports with ONNX parity."""
    from scenetag.infer.export import export_onnx
    from scenetag.infer.outputs import read_probabilities
    from scenetag.infer.predictor import Predictor
    from scenetag.train.setup import model_identity
    from scenetag.workflows.ensemble import make_ensemble

    one_epoch = "[{name: head, unfreeze: 0.0, epochs: 1, lr: 0.003, lr_mult: 1.0}, {name: top, unfreeze: 0.5, epochs: 1, lr: 0.002, lr_mult: 10.0}]"
    cfg = tiny_cfg(synth_dir, **{"model.head": head, "model.csra_lambda": "0.3", "train.phases": one_epoch, "train.lr_find": "false"})
    assert model_identity(cfg) != model_identity(tiny_cfg(synth_dir))
    run = tmp_path / head
    train(cfg, run, progress=False)
    caches = [np.load(f, mmap_mode="r") for f in (run / "cache").glob("*.npy")]
    assert any(a.ndim == 5 for a in caches)  # (images, views, channels, h, w) at the head's tap
    model, meta = load_model(run / "best.pt")
    assert meta["head"] == head and model.spatial
    assert meta.get("head_options", {}) == ({"csra_lambda": 0.3, "csra_temperature": 1.0} if head == "csra" else {})
    if head == "csra":
        assert model.head.lam == 0.3
    paths = [r["path"] for r in csv.DictReader(open(run / "test_predictions.csv"))][:6]

    def probabilities(model_file):
        return np.array([[r.probabilities[c] for c in meta["classes"]] for r in Predictor(model_file, num_workers=0).predict(paths)])

    from_images = probabilities(run / "best.pt")
    np.testing.assert_allclose(from_images, read_probabilities(run / "test_predictions.csv", meta["classes"])[:6], atol=2e-2)  # fp16 cache
    assert export_onnx(run / "best.pt", tmp_path / "m.onnx")["max_abs_diff"] <= 1e-4
    np.testing.assert_allclose(probabilities(tmp_path / "m.onnx"), from_images, atol=1e-4)
    make_ensemble([run / "best.pt", run / "best.pt"], tmp_path / "ens.pt")
    np.testing.assert_allclose(probabilities(tmp_path / "ens.pt"), from_images, atol=1e-4)
