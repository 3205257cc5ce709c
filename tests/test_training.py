from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch

from scenetag.cache import Trunk, TrunkRunner, build_cache
from scenetag.checkpoint import load_model, read_checkpoint
from scenetag.config import ConfigError, load_config
from scenetag.data import load_dataset
from scenetag.lr_find import lr_find, valley
from scenetag.models import build_model
from scenetag.training import (
    AsymmetricLoss,
    discriminative_groups,
    make_optimizer,
    one_cycle,
    phase_boundaries,
    train,
)
from scenetag.transforms import Preprocessing, make_views

from .conftest import tiny_cfg


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

    from scenetag.transforms import eval_tensor

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


def test_resume_reaches_same_result(trained_run, tmp_path, monkeypatch):
    cfg, run, result = trained_run
    import scenetag.training as tr

    real = tr.write_metrics_csv
    calls = {"n": 0}

    def interrupt_after_three(path, rows):
        real(path, rows)
        calls["n"] += 1
        if calls["n"] == 3:  # killed in phase 2, after its first epoch was saved
            raise KeyboardInterrupt

    monkeypatch.setattr(tr, "write_metrics_csv", interrupt_after_three)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(copy.deepcopy(cfg), part, progress=False)
    monkeypatch.setattr(tr, "write_metrics_csv", real)
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
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, run, progress=False)


def test_without_val_the_last_epoch_of_the_last_phase_is_kept(synth_dir, tmp_path):
    """data.val=0 (train on everything but test): best.pt must be the final weights, not the end of phase 1."""
    from scenetag.training import cross_validate, weights_digest

    cfg = tiny_cfg(synth_dir, **{"data.val": 0.0, "train.lr_find": "false"})
    res = train(cfg, tmp_path / "r", progress=False)
    best, _ = load_model(tmp_path / "r" / "best.pt")
    last, _ = load_model(tmp_path / "r" / "last.pt")
    assert weights_digest(best) == weights_digest(last)
    assert res["best_boundary"] == read_checkpoint(tmp_path / "r" / "last.pt")["meta"]["boundary"] < len(best.pieces())
    assert "val" not in res["metrics"] and res["thresholds"] == [0.5] * 5
    cv = cross_validate(cfg, tmp_path / "cv", k=2, progress=False)  # K-fold without a val part
    assert len(cv["folds"]) == 2 and all(not json.loads((tmp_path / "cv" / f"fold{i}" / "split.json").read_text())["val"] for i in (1, 2))


def _tiny_model():
    torch.manual_seed(0)
    return build_model("test_efficientnet", "none", 5, "reference", 0.5)


def test_cached_gradients_equal_uncached(synth_dir, tmp_path):
    ds = load_dataset(synth_dir).subset(range(8))
    model = _tiny_model()
    pp = Preprocessing(size=48)
    k = model.boundary_for_fraction(0.5)
    cache = build_cache(model, {"t": 1}, ds, ["orig", "flip"], [k], pp, seed=0, cache_dir=tmp_path / "c", batch_size=8, engine="torch", dtype="float32", progress=False)
    views = torch.stack([make_views(__import__("scenetag.data", fromlist=["x"]).open_image(p), ["orig", "flip"], pp, __import__("scenetag.transforms", fromlist=["x"]).image_seed(0, i)) for i, p in enumerate(ds.paths)])
    x_pix = views[:, 1]
    x_act = cache.get(k, np.arange(8), 1)
    y = torch.from_numpy(ds.labels).float()
    model.freeze_until(k)
    model.train()
    grads = []
    for fwd in (lambda: model(x_pix), lambda: model.forward_from(k, x_act)):
        model.zero_grad()
        torch.manual_seed(1)  # same dropout masks
        torch.nn.functional.binary_cross_entropy_with_logits(fwd(), y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_cache_is_reused_and_rebuilt_when_damaged(synth_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    ds = load_dataset(synth_dir).subset(range(6))
    model = _tiny_model()
    pp = Preprocessing(size=32)
    args = dict(model=model, model_id={"t": 1}, ds=ds, kinds=["orig"], taps=[len(model.pieces())], pp=pp, seed=0, cache_dir=tmp_path, batch_size=4, engine="torch", progress=False)
    a = build_cache(**args)
    b = build_cache(**args)
    assert a.key == b.key and "reusing" in caplog.text
    f = next(tmp_path.glob(f"{a.key}-*.npy"))
    f.write_bytes(f.read_bytes()[:-10])
    c = build_cache(**args)
    assert "damaged" in caplog.text
    np.testing.assert_array_equal(a.acts[len(model.pieces())], c.acts[len(model.pieces())])
    d = build_cache(**(args | {"kinds": ["flip"]}))
    assert d.key != a.key  # a different view recipe never reuses a stale cache


def test_onnx_engine_matches_torch():
    model = _tiny_model().eval()
    taps = [2, len(model.pieces())]
    x = torch.randn(3, 3, 48, 48)
    ort_out = TrunkRunner(Trunk(model, taps), "onnx", sample=x)(x)
    torch_out = TrunkRunner(Trunk(model, taps), "torch")(x)
    for a, b in zip(ort_out, torch_out):
        np.testing.assert_allclose(a, b, atol=1e-4)


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


def test_discriminative_lrs_and_one_cycle_momentum():
    model = _tiny_model()
    k = model.boundary_for_fraction(0.8)
    groups = discriminative_groups(model, k, 1e-2, 10.0)
    lrs = [g["lr"] for g in groups]
    assert lrs == sorted(lrs) and lrs[-1] == pytest.approx(1e-2) and lrs[0] == pytest.approx(1e-3)
    trainable = {id(p) for g in groups for p in g["params"]}
    model.freeze_until(k)
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}
    opt = make_optimizer(groups, load_config())
    sched = one_cycle(opt, 100)
    seen = []
    for _ in range(100):
        opt.step()
        sched.step()
        seen.append((opt.param_groups[-1]["lr"], opt.param_groups[-1]["betas"][0]))
    peak = int(np.argmax([s[0] for s in seen]))
    assert 15 < peak < 35  # warm-up ~25%
    assert seen[peak][1] < seen[-1][1]  # beta1 low at peak LR, high at the end


@pytest.mark.parametrize("steps", range(1, 13))
def test_one_cycle_runs_any_number_of_steps(steps):
    """Tiny phases (a handful of batches) must schedule too; torch's 1/(pct*T - 1) once divided by zero at T=4."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = one_cycle(opt, steps)
    lrs = []
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(np.isfinite(lrs)) and max(lrs) <= 1e-3 + 1e-12


def test_phase_boundaries_follow_fractions():
    model = _tiny_model()
    cfg = load_config(None, ["train.phases=[{name: a, unfreeze: 0.0}, {name: b, unfreeze: 0.6}, {name: c, unfreeze: 0.8}]"])
    b = phase_boundaries(model, cfg)
    assert b[0] == len(model.pieces()) and b[0] > b[1] >= b[2]


def test_asl_reduces_to_bce_without_focusing():
    logits = torch.randn(6, 5)
    y = (torch.rand(6, 5) > 0.5).float()
    asl = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(logits, y)
    torch.testing.assert_close(asl, torch.nn.functional.binary_cross_entropy_with_logits(logits, y), atol=1e-5, rtol=1e-5)


def test_cross_validation_covers_every_image_once(synth_dir, tmp_path):
    from scenetag.training import cross_validate

    cfg = tiny_cfg(synth_dir)
    cfg.train.phases = cfg.train.phases[:1]
    cfg.train.phases[0].lr = 0.003
    cv = cross_validate(cfg, tmp_path / "cv", k=3, progress=False)
    assert len(cv["folds"]) == 3
    tests = [json.loads((tmp_path / "cv" / f"fold{i}" / "split.json").read_text())["test"] for i in (1, 2, 3)]
    assert sorted(sum(tests, [])) == list(range(60))
    f1s = [f["samples_f1"] for f in cv["folds"]]
    assert cv["mean"]["samples_f1"] == pytest.approx(np.mean(f1s)) and cv["std"]["samples_f1"] == pytest.approx(np.std(f1s))
    # One shared cache for all folds: exactly one train-view and one eval-view cache key.
    assert len(list((tmp_path / "cv" / "cache").glob("*.json"))) == 2
    again = cross_validate(cfg, tmp_path / "cv", k=3, progress=False)  # finished folds are reused
    assert again["mean"] == cv["mean"]


def test_big_cache_goes_to_memory_mapped_file(synth_dir, tmp_path):
    ds = load_dataset(synth_dir).subset(range(6))
    model = _tiny_model()
    args = dict(model=model, model_id={"t": 1}, ds=ds, kinds=["orig", "flip"], taps=[2, len(model.pieces())], pp=Preprocessing(size=32), seed=0, cache_dir=tmp_path, batch_size=4, engine="torch", progress=False)
    small = build_cache(**args, in_memory_gb=0.0)  # nothing fits in memory
    assert all(isinstance(a, np.memmap) for a in small.acts.values())
    big = build_cache(**(args | {"cache_dir": None}), in_memory_gb=4.0)
    for tap in small.acts:
        assert not isinstance(big.acts[tap], np.memmap)
        np.testing.assert_array_equal(np.asarray(small.acts[tap]), big.acts[tap])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_lr_find_command(synth_dir, tmp_path, capsys):
    from scenetag.cli import main

    args = ["lr-find", "--data", str(synth_dir), "--out", str(tmp_path / "lr"), "-q", "--set", "model.backbone=test_efficientnet", "--set", "model.weights=none", "--set", "model.image_size=48", "--set", "train.views=[orig]", "--set", "train.lr_find_steps=15"]
    assert main(args) == 0
    assert "suggested LR" in capsys.readouterr().out
    data = json.loads((tmp_path / "lr" / "lr_find_1_head.json").read_text())
    assert 1e-5 <= data["used"] <= 3e-2 and len(data["lrs"]) == len(data["losses"]) >= 5
    assert (tmp_path / "lr" / "lr_find_1_head.png").stat().st_size > 5000
