"""Evaluate, then refit: the refit trains on every image with the evaluated run's schedule and ships final.pt."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scenetag.checkpoint import read_checkpoint
from scenetag.config import load_config
from scenetag.data.splits import Split
from scenetag.errors import ConfigError, DataError
from scenetag.runs import RunDir, model_file
from scenetag.train.cache import ActivationCache, StackedCaches
from scenetag.train.recipe import train
from scenetag.train.refit import read_history, refit, refit_config, refit_split
from scenetag.train.saver import selected_epoch
from tests.conftest import tiny_cfg


def _row(phase: str, epoch: int, f1: float | str, loss: float = 0.3, lr: float = 1e-3) -> dict:
    return {"phase": phase, "epoch": epoch, "lr": lr, "val_samples_f1": f1, "val_loss": loss}


def test_selected_epoch_replays_the_savers_rule():
    rows = [_row("head", 1, 0.5), _row("head", 2, 0.7), _row("top", 1, 0.7), _row("top", 2, 0.6)]
    assert selected_epoch(rows, [2, 2], "f1") == (0, 2)  # a tie does not replace the earlier best
    rows[3]["val_samples_f1"] = 0.71
    assert selected_epoch(rows, [2, 2], "f1") == (1, 2)
    by_loss = [_row("a", 1, 0.1, loss=0.5), _row("a", 2, 0.1, loss=0.2), _row("b", 1, 0.9, loss=0.3)]
    assert selected_epoch(by_loss, [2, 1], "loss") == (0, 2)
    no_val = [_row("a", 1, "nan"), _row("a", 2, "nan")]
    assert selected_epoch(no_val, [2], "f1") == (0, 2)  # without val the latest epoch is kept
    with pytest.raises(ValueError):
        selected_epoch(rows, [2, 3], "f1")


def test_refit_config_repeats_the_schedule_up_to_the_selected_epoch(synth_dir):
    cfg = tiny_cfg(synth_dir, **{"train.phases": "[{name: a, epochs: 3, lr: 0.0}, {name: b, unfreeze: 0.5, epochs: 4, lr: 0.002}, {name: c, unfreeze: 0.8, epochs: 2, lr: 0.001}]"})
    rows = [_row("a", e, 0.5, lr=3.3e-4) for e in (1, 2, 3)] + [_row("b", 1, 0.6, lr=0.002), _row("b", 2, 0.8, lr=0.002)]
    rows += [_row("b", e, 0.7, lr=0.002) for e in (3, 4)] + [_row("c", e, 0.7, lr=0.001) for e in (1, 2)]
    out = refit_config(cfg, rows, "epoch")
    assert [(p.name, p.epochs, p.stop, p.epochs_run, p.lr) for p in out.train.phases] == [("a", 3, 0, 3, 3.3e-4), ("b", 4, 2, 2, 0.002), ("c", 0, 0, 0, 0.001)]
    assert not out.train.lr_find and out.data.val == 0 and out.data.test == 0
    assert cfg.train.phases[1].stop == 0  # the evaluated run's config is not changed
    whole_phase, everything = refit_config(cfg, rows, "phase"), refit_config(cfg, rows, "all")
    assert [(p.epochs, p.epochs_run) for p in whole_phase.train.phases] == [(3, 3), (4, 4), (0, 0)]
    assert [(p.epochs, p.epochs_run, p.lr) for p in everything.train.phases] == [(3, 3, 3.3e-4), (4, 4, 0.002), (2, 2, 0.001)]
    with pytest.raises(ConfigError, match="until"):
        refit_config(cfg, rows, "never")


def test_phase_stop_must_lie_within_its_schedule(synth_dir):
    with pytest.raises(ConfigError, match="stop"):
        tiny_cfg(synth_dir, **{"train.phases.0.stop": 3})


def test_refit_split_trains_on_every_image():
    split = Split(np.array([4, 0, 2]), np.array([1]), np.array([3, 5]))
    whole, parts = refit_split(split)
    assert sorted(whole.train.tolist()) == [0, 1, 2, 3, 4, 5] and not len(whole.val) and not len(whole.test)
    assert [p.tolist() for p in parts] == [[4, 0, 2], [1, 3, 5]]
    assert np.array_equal(np.concatenate(parts), whole.train)


def test_stacked_caches_read_like_one_cache():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 2, 4)).astype(np.float32)
    b = rng.normal(size=(2, 2, 4)).astype(np.float32)
    stacked = StackedCaches([ActivationCache({7: a}, ["orig", "flip"], "a"), ActivationCache({7: b}, ["orig", "flip"], "b")])
    whole = ActivationCache({7: np.concatenate([a, b])}, ["orig", "flip"], "ab")
    images, views = np.array([4, 0, 3, 2, 1]), np.array([1, 0, 0, 1, 1])
    assert np.array_equal(stacked.get(7, images, views).numpy(), whole.get(7, images, views).numpy())
    assert np.array_equal(stacked.get(7, images, 1).numpy(), whole.get(7, images, 1).numpy())
    with pytest.raises(ValueError):
        StackedCaches([ActivationCache({7: a}, ["orig"], "a"), ActivationCache({7: b}, ["flip"], "b")])


@pytest.fixture(scope="module")
def refitted(synth_dir, tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("refit") / "run")
    train(tiny_cfg(synth_dir), run, progress=False)
    return run, refit(run, progress=False)


def test_refit_trains_on_every_image_with_the_evaluated_schedule(refitted):
    run, res = refitted
    split, refit_run_split = Split.read(run.split), Split.read(run.refit.split)
    every = sorted(np.concatenate([split.train, split.val, split.test]).tolist())
    assert sorted(refit_run_split.train.tolist()) == every == list(range(60)) and res["n_images"] == 60
    assert not len(refit_run_split.val) and not len(refit_run_split.test)
    cfg, rcfg = load_config(run.config), load_config(run.refit.config)
    history = read_history(run.refit)
    assert [(row["phase"], int(row["epoch"])) for row in history] == [(row["phase"], int(row["epoch"])) for row in read_history(run)]  # every epoch again
    first_lrs = {row["phase"]: float(row["lr"]) for row in read_history(run)}
    assert all(float(row["lr"]) == first_lrs[row["phase"]] for row in history)  # the LRs the evaluated run used
    assert [p.epochs for p in rcfg.train.phases] == [p.epochs for p in cfg.train.phases] and not rcfg.train.lr_find


def test_final_checkpoint_has_refit_weights_and_the_evaluated_thresholds(refitted):
    run, res = refitted
    final, best, refit_best = (read_checkpoint(p) for p in (run.final, run.best, run.refit.best))
    assert res["final"] == str(run.final)
    assert final["meta"]["thresholds"] == best["meta"]["thresholds"] and final["meta"]["metrics"] == best["meta"]["metrics"]
    assert final["meta"]["refit"]["n_images"] == 60
    assert all(np.array_equal(final["state_dict"][k], refit_best["state_dict"][k]) for k in refit_best["state_dict"])
    assert any(not np.array_equal(final["state_dict"][k], best["state_dict"][k]) for k in best["state_dict"])


def test_refit_reuses_the_evaluated_runs_training_cache(refitted):
    run, _ = refitted
    keys = {p.stem for p in run.cache.glob("*.json")}
    assert len(keys) == 3  # train + eval of the evaluated run, and only the held-out images' training views for the refit
    assert not run.refit.cache.exists()


def test_refit_again_reuses_it(refitted):
    run, _ = refitted
    assert refit(run, progress=False)["reused"]


def test_a_run_folder_means_its_final_model(refitted, tmp_path):
    run, _ = refitted
    assert model_file(run.path) == run.final and model_file(run.path, evaluated=True) == run.best
    assert model_file(run.best) == run.best
    with pytest.raises(Exception, match="final.pt or best.pt"):
        model_file(tmp_path)


def test_the_refit_model_is_not_scored_on_its_own_runs_test_part(refitted, tmp_path):
    from scenetag.workflows.evaluate import evaluate_checkpoint

    run, _ = refitted
    with pytest.raises(DataError, match="refit model"):
        evaluate_checkpoint(run.final, tmp_path / "ev", data=run.path, split="test", progress=False)


def test_refit_needs_a_finished_run(tmp_path):
    with pytest.raises(ConfigError, match="no finished run"):
        refit(tmp_path / "nothing", progress=False)


def test_refit_after_cross_validation_tunes_thresholds_out_of_fold(synth_dir, tmp_path):
    from scenetag.data.layouts import load_dataset
    from scenetag.metrics import tune_thresholds
    from scenetag.train.cv import cross_validate
    from scenetag.train.refit import out_of_fold, refit_after_cv

    cv = RunDir(tmp_path / "cv")
    cross_validate(tiny_cfg(synth_dir), cv, k=2, progress=False)
    res = refit_after_cv(cv, 2, progress=False)
    ds = load_dataset(synth_dir)
    y, probs = out_of_fold(cv, 2, ds.labels, ds.classes)
    assert len(y) == len(ds) == res["n_images"]  # every image once, from the fold that did not train on it
    meta = read_checkpoint(cv.final)["meta"]
    assert np.allclose(meta["thresholds"], tune_thresholds(y, probs, "per_label"))
    assert meta["metrics"]["cv"]["mean"] == json.loads(cv.cv_summary.read_text())["mean"]
    assert sorted(Split.read(cv.refit.split).train.tolist()) == list(range(len(ds)))
    assert not [p for p in cv.refit.path.rglob("*.npy")]  # the folds' cache of every image is reused


def test_cv_refit_schedule_is_every_phase_at_the_folds_median_lr(synth_dir):
    from scenetag.train.refit import cv_refit_config

    cfg = tiny_cfg(synth_dir)  # phases: head 2 epochs (finder LR), top 2 epochs
    histories = [[_row("head", 1, 0.5, lr=lr), _row("head", 2, f1, lr=lr), _row("top", 1, 0.1, lr=0.002), _row("top", 2, top, lr=0.002)] for lr, f1, top in ((1e-3, 0.9, 0.1), (2e-3, 0.5, 0.8), (4e-3, 0.5, 0.9))]
    out = cv_refit_config([cfg] * 3, histories)
    assert [(p.epochs_run, p.lr) for p in out.train.phases] == [(2, 2e-3), (2, 0.002)]  # fold 1 selected the head phase: still every phase


def test_served_and_exported_final_model_says_its_metrics_are_an_estimate(refitted, tmp_path):
    from fastapi.testclient import TestClient

    from scenetag.infer.export import export_onnx
    from scenetag.infer.onnx import load_onnx
    from scenetag.workflows.serve import ServeLimits, create_app

    run, _ = refitted
    best_metrics = read_checkpoint(run.best)["meta"]["metrics"]
    shown = TestClient(create_app(run.final, ServeLimits(max_upload_mb=1.0, max_files=2, max_pixels=2_000_000))).get("/model").json()
    assert shown["refit"]["n_images"] == 60 and shown["metrics"] == best_metrics
    export_onnx(run.final, tmp_path / "final.onnx")
    _, meta = load_onnx(tmp_path / "final.onnx")
    assert meta["refit"]["n_images"] == 60 and meta["metrics"] == best_metrics


def test_a_phase_of_zero_epochs_is_skipped(synth_dir, tmp_path):
    cfg = tiny_cfg(synth_dir, **{"train.phases": "[{name: head, epochs: 2, lr: 0.01, lr_mult: 1.0}, {name: top, unfreeze: 0.5, epochs: 0, lr: 0.002}]"})
    res = train(cfg, tmp_path / "r", progress=False)
    assert [row["phase"] for row in read_history(RunDir(tmp_path / "r"))] == ["head", "head"] and res["metrics"]["test"]
