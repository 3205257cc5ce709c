from __future__ import annotations

import copy
import json

import numpy as np
import torch

from scenetag.config import load_config
from scenetag.models import build_model
from scenetag.train.lr_find import lr_find, valley
from scenetag.train.optim import discriminative_groups, make_optimizer



def _tiny_model():
    torch.manual_seed(0)
    return build_model("test_efficientnet", "none", 5, "reference", 0.5)


def test_lr_finder_restores_model_and_optimizer():
    model = _tiny_model()
    k = len(model.pieces())
    model.freeze_until(k)
    opt = make_optimizer(discriminative_groups(model, k, 1e-3, 1.0), load_config())
    x = torch.randn(16, model.num_features)
    y = (torch.rand(16, 5) > 0.5).float()
    # One real step so the optimizer has state to restore.
    torch.nn.functional.binary_cross_entropy_with_logits(model.forward_from(k, x), y).backward()
    opt.step()
    before = copy.deepcopy(model.state_dict())
    opt_before = copy.deepcopy(opt.state_dict())

    def batches():
        while True:
            yield x, y

    res = lr_find(model, opt, batches(), torch.nn.functional.binary_cross_entropy_with_logits, forward=lambda z: model.forward_from(k, z), steps=30)
    for n, v in model.state_dict().items():
        torch.testing.assert_close(v, before[n], rtol=0, atol=0)
    after = opt.state_dict()
    assert after["param_groups"] == opt_before["param_groups"]
    for pid, st in opt_before["state"].items():
        for key, v in st.items():
            torch.testing.assert_close(after["state"][pid][key], v, rtol=0, atol=0)
    assert 1e-7 <= res.suggestion <= 1 and len(res.lrs) >= 5


def test_valley_picks_inside_descent():
    lrs = list(np.logspace(-6, 0, 50))
    losses = [1.0] * 10 + list(np.linspace(1.0, 0.2, 30)) + list(np.linspace(0.2, 5, 10))
    v = valley(lrs, losses)
    assert lrs[10] < v < lrs[40]


def test_lr_find_command(synth_dir, tmp_path, capsys):
    from scenetag.cli import main

    args = ["lr-find", "--data", str(synth_dir), "--out", str(tmp_path / "lr"), "-q", "--set", "model.backbone=test_efficientnet", "--set", "model.weights=none", "--set", "model.image_size=48", "--set", "train.views=[orig]", "--set", "train.lr_find_steps=15"]
    assert main(args) == 0
    assert "suggested LR" in capsys.readouterr().out
    data = json.loads((tmp_path / "lr" / "lr_find_1_head.json").read_text())
    assert 1e-5 <= data["used"] <= 3e-2 and len(data["lrs"]) == len(data["losses"]) >= 5
    assert (tmp_path / "lr" / "lr_find_1_head.png").stat().st_size > 5000


def test_training_without_a_batch_of_two_is_refused_before_caching(synth_dir, tmp_path):
    import pytest

    from scenetag.errors import TrainingError
    from scenetag.train.recipe import train

    from ..conftest import tiny_cfg

    # batch_size 1: every batch has one image, which BatchNorm cannot train on (the finder looped forever before).
    with pytest.raises(TrainingError, match="no training batch of at least 2 images"):
        train(tiny_cfg(synth_dir, **{"train.batch_size": 1}), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "cache").exists()


def test_batch_count_matches_the_batches_and_the_finder_never_loops_on_none():
    import pytest

    from scenetag.errors import TrainingError
    from scenetag.train.batches import batches_per_epoch, endless_batches, epoch_batches

    class Cache:  # answers like an activation cache: one 4-number vector per (image, view)
        kinds = ["orig"]

        def get(self, tap, images, views):
            return torch.zeros(len(images), 4)

    for n in range(0, 12):
        for bs in range(1, 6):
            rows, y = np.arange(n), np.zeros((n, 2))
            counted = sum(1 for _ in epoch_batches(Cache(), 0, rows, y, bs, np.random.default_rng(0)))
            assert batches_per_epoch(n, bs) == counted, (n, bs)
    with pytest.raises(TrainingError, match="no training batch"):
        next(endless_batches(Cache(), 0, np.arange(1), np.zeros((1, 2)), 8, seed=0))  # one image on this shard


def test_diverging_loss_is_an_error_naming_the_phase():
    import pytest

    from scenetag.errors import TrainingError

    model = build_model("test_efficientnet", "none", 5, "reference", 0.5, quiet=True)
    k = len(model.pieces())
    model.freeze_until(k)
    opt = make_optimizer(discriminative_groups(model, k, 1e-3, 1.0), load_config())

    def batches():
        while True:
            yield torch.randn(4, model.num_features), torch.ones(4, 5)

    nan_loss = lambda out, y: out.sum() * float("nan")  # noqa: E731
    with pytest.raises(TrainingError, match="LR finder: the loss was not finite"):
        lr_find(model, opt, batches(), nan_loss, forward=lambda z: model.forward_from(k, z), steps=20)
