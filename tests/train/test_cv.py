from __future__ import annotations

import json

import numpy as np
import pytest

from scenetag.train.cv import cross_validate

from ..conftest import tiny_cfg



def test_cross_validation_covers_every_image_once(synth_dir, tmp_path):
    cfg = tiny_cfg(synth_dir)
    cfg.train.phases = cfg.train.phases[:1]
    cfg.train.phases[0].lr = 0.003
    cv = cross_validate(cfg, tmp_path / "cv", k=3, progress=False)
    assert len(cv["folds"]) == 3
    tests = [json.loads((tmp_path / "cv" / f"fold{i}" / "split.json").read_text())["test"] for i in (1, 2, 3)]
    assert sorted(sum(tests, [])) == list(range(60))
    f1s = [f["samples_f1"] for f in cv["folds"]]
    # Errors by kind, summed over the test folds, count every wrong (image, label) pair the folds' Hamming losses count.
    wrong = sum(kind["missed"] + kind["extra"] for kind in cv["errors_by_kind"].values())
    assert wrong == round(sum(f["hamming_loss"] * len(t) * 5 for f, t in zip(cv["folds"], tests)))
    assert cv["mean"]["samples_f1"] == pytest.approx(np.mean(f1s)) and cv["std"]["samples_f1"] == pytest.approx(np.std(f1s))
    # One shared cache for all folds: exactly one train-view and one eval-view cache key.
    assert len(list((tmp_path / "cv" / "cache").glob("*.json"))) == 2
    again = cross_validate(cfg, tmp_path / "cv", k=3, progress=False)  # finished folds are reused
    assert again["mean"] == cv["mean"]




def test_folds_of_another_experiment_are_not_mixed_in(synth_dir, tmp_path):
    from scenetag.errors import ConfigError

    cfg = tiny_cfg(synth_dir)
    cfg.train.phases = cfg.train.phases[:1]
    cfg.train.phases[0].lr = 0.003
    cfg.train.phases[0].epochs = 1
    cross_validate(cfg, tmp_path / "cv", k=2, progress=False)
    other = cfg.model_copy(deep=True)
    other.train.mixup = 0.0
    with pytest.raises(ConfigError, match="fold1 holds a finished fold of another experiment \\(train.mixup differ\\)"):
        cross_validate(other, tmp_path / "cv", k=2, progress=False)
    with pytest.raises(ConfigError, match="another split"):
        cross_validate(cfg, tmp_path / "cv", k=3, progress=False)
