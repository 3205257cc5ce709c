from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scenetag.checkpoint import load_model, read_checkpoint
from scenetag.errors import CheckpointError
from scenetag.cli import main
from scenetag.models.ensemble import ensemble_adapters
from scenetag.workflows.ensemble import combine, make_ensemble
from scenetag.metrics import tune_thresholds
from scenetag.workflows.evaluate import load_run_parts
from scenetag.infer.predictor import Predictor
from scenetag.data.preprocessing import Preprocessing

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _variant(src, dst, size=None, norm=None, temperatures=None, classes=None, resize=None, seed=1):
    """A second member: the same checkpoint with a perturbed head and, optionally, other preprocessing."""
    payload = read_checkpoint(src)
    g = torch.Generator().manual_seed(seed)
    payload["state_dict"] = {k: v + 0.3 * torch.randn(v.shape, generator=g) if k.startswith("head") and k.endswith(("weight", "bias")) else v for k, v in payload["state_dict"].items()}
    meta = payload["meta"]
    meta["preprocessing"] = dict(meta["preprocessing"], **({"size": size} if size else {}), **(norm or {}), **({"resize": resize} if resize else {}))
    meta["thresholds"] = [0.3] * len(meta["classes"])
    if temperatures is not None:
        meta["temperatures"] = temperatures
    if classes is not None:
        meta["classes"] = classes
    torch.save(payload, dst)
    return dst


def test_adapter_maps_ensemble_input_to_each_members_normalisation():
    ens = Preprocessing(size=56, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    member = Preprocessing(size=48, mean=tuple(IMAGENET["mean"]), std=tuple(IMAGENET["std"]))
    sizes, scales, shifts = ensemble_adapters(ens, [ens, member])
    raw = torch.rand(2, 3, 8, 8)
    x = (raw - 0.5) / 0.5
    want = (raw - torch.tensor(IMAGENET["mean"])[:, None, None]) / torch.tensor(IMAGENET["std"])[:, None, None]
    torch.testing.assert_close(x * scales[1][:, None, None] + shifts[1][:, None, None], want)
    torch.testing.assert_close(x * scales[0][:, None, None] + shifts[0][:, None, None], x)
    assert sizes == [56, 48]


def test_ensemble_output_is_weighted_mean_of_calibrated_member_probabilities(trained_run, tmp_path):
    _, run, _ = trained_run
    temps = [2.0, 0.5, 1.0, 1.5, 3.0]
    other = _variant(run / "best.pt", tmp_path / "b.pt", temperatures=temps)
    model, meta = combine([run / "best.pt", other], weights=[1, 3])
    a, _ = load_model(run / "best.pt")
    b, _ = load_model(other)
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        want = 0.25 * torch.sigmoid(a(x)) + 0.75 * torch.sigmoid(b(x) / torch.tensor(temps))
        got = torch.sigmoid(model(x))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert [m["weight"] for m in meta["members"]] == [0.25, 0.75]
    # Thresholds default to the weighted mean of the members'.
    single = read_checkpoint(run / "best.pt")["meta"]["thresholds"]
    np.testing.assert_allclose(meta["thresholds"], 0.25 * np.array(single) + 0.75 * 0.3)


def test_ensemble_of_a_model_with_itself_predicts_like_the_model(trained_run, synth_dir, tmp_path):
    _, run, _ = trained_run
    res = make_ensemble([run / "best.pt", run / "best.pt"], tmp_path / "e.pt", progress=False)
    images = [synth_dir / "original" / f"{i}.jpg" for i in range(1, 9)]
    one, two = Predictor(run / "best.pt").predict(images), Predictor(res["path"]).predict(images)
    for a, b in zip(one, two):
        assert a.labels == b.labels
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-5)


def test_members_with_other_input_size_and_normalisation_round_trip_and_export(trained_run, synth_dir, tmp_path):
    from scenetag.infer.export import export_onnx

    _, run, _ = trained_run
    other = _variant(run / "best.pt", tmp_path / "b.pt", size=56, norm=IMAGENET)
    make_ensemble([run / "best.pt", other], tmp_path / "e.pt", progress=False)
    model, meta = load_model(tmp_path / "e.pt")
    assert meta["preprocessing"]["size"] == 56 and model.sizes == [48, 56]
    assert [m["source"] for m in meta["members"]] == [str(run / "best.pt"), str(other)]
    # The input is the largest member's (56 px, ImageNet normalisation); the 48 px member
    # gets it resized and renormalised to its own mean/std 0.5.
    assert meta["preprocessing"]["mean"] == IMAGENET["mean"]
    x = torch.randn(2, 3, 56, 56)
    a, _ = load_model(run / "best.pt")
    raw = x * torch.tensor(IMAGENET["std"])[:, None, None] + torch.tensor(IMAGENET["mean"])[:, None, None]
    xa = torch.nn.functional.interpolate((raw - 0.5) / 0.5, size=(48, 48), mode="bilinear", align_corners=False)
    b, _ = load_model(other)
    with torch.no_grad():
        want = 0.5 * torch.sigmoid(a(xa)) + 0.5 * torch.sigmoid(b(x))
        torch.testing.assert_close(torch.sigmoid(model(x)), want, atol=1e-4, rtol=0)
    res = export_onnx(tmp_path / "e.pt", tmp_path / "e.onnx")
    assert res["max_abs_diff"] <= 1e-4
    from scenetag.infer.onnx import load_onnx

    assert [m["preprocessing"]["size"] for m in load_onnx(tmp_path / "e.onnx")[1]["members"]] == [48, 56]  # the file describes its members
    pt, onnx = Predictor(tmp_path / "e.pt").predict([synth_dir / "original" / "2.jpg"]), Predictor(tmp_path / "e.onnx").predict([synth_dir / "original" / "2.jpg"])
    assert pt[0].labels == onnx[0].labels
    assert max(abs(pt[0].probabilities[c] - onnx[0].probabilities[c]) for c in pt[0].probabilities) < 1e-4


def test_tune_on_run_tunes_thresholds_on_its_val_part_and_reports_test(trained_run, tmp_path):
    _, run, _ = trained_run
    other = _variant(run / "best.pt", tmp_path / "b.pt")
    res = make_ensemble([run / "best.pt", other], tmp_path / "e.pt", tune_on=run, progress=False)
    assert set(res["metrics"]) == {"val", "test"} and "val part" in res["threshold_source"]
    parts = load_run_parts(run)
    p = Predictor(tmp_path / "e.pt").dataset_probabilities(parts["val"])
    np.testing.assert_allclose(res["thresholds"], tune_thresholds(parts["val"].labels, p), atol=1e-5)
    assert read_checkpoint(tmp_path / "e.pt")["meta"]["metrics"]["test"]["n_images"] == len(parts["test"])


@pytest.mark.parametrize(
    "kind, match",
    [
        ("one", "at least two"),
        ("classes", "classes"),
        ("weights", "weights"),
        ("resize", "same part of the image"),
        ("nested", "itself an ensemble"),
        ("onnx", ".pt checkpoints"),
    ],
)
def test_bad_ensembles_are_refused_and_write_nothing(trained_run, tmp_path, kind, match):
    _, run, _ = trained_run
    best = run / "best.pt"
    args = {
        "one": ([best], None),
        "classes": ([best, _variant(best, tmp_path / "c.pt", classes=["a", "b", "c", "d", "e"])], None),
        "weights": ([best, best], [1.0]),
        "resize": ([best, _variant(best, tmp_path / "r.pt", resize="crop")], None),
        "nested": None,
        "onnx": ([best, tmp_path / "m.onnx"], None),
    }[kind]
    if kind == "nested":
        make_ensemble([best, best], tmp_path / "inner.pt", progress=False)
        args = ([best, tmp_path / "inner.pt"], None)
    with pytest.raises(CheckpointError, match=match):
        make_ensemble(args[0], tmp_path / "out.pt", weights=args[1], progress=False)
    assert not (tmp_path / "out.pt").exists()


def test_cli_ensemble_and_cv_ensemble(trained_run, synth_dir, tmp_path, capsys):
    from tests.conftest import tiny_cfg

    _, run, _ = trained_run
    assert main(["ensemble", str(run / "best.pt"), str(run / "best.pt"), "--out", str(tmp_path / "e.pt"), "--tune-on", str(run), "-q"]) == 0
    out = capsys.readouterr().out
    assert "thresholds (tuned per label" in out and "test part" in out and (tmp_path / "e.pt").is_file()
    assert main(["ensemble", str(run / "best.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["ensemble", str(run / "best.pt"), str(run / "best.pt"), "--out", str(tmp_path / "x.pt"), "--tune-on", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    assert main(["train", "--ensemble", "--data", str(synth_dir), "--out", str(tmp_path / "t")]) == 2
    assert "--cv" in capsys.readouterr().err
    # train --cv 2 --ensemble: K fold models averaged into OUT/ensemble.pt
    cfg = tiny_cfg(synth_dir)
    sets = [f"model.{k}={v}" for k, v in [("backbone", cfg.model.backbone), ("weights", "none"), ("image_size", 48)]]
    sets += ["train.views=[orig, flip]", "train.batch_size=8", "train.threads=1", "train.lr_find=false", "train.phases=[{name: head, unfreeze: 0.0, epochs: 1, lr: 0.003, lr_mult: 1.0}]"]
    argv = ["train", "--cv", "2", "--ensemble", "--data", str(synth_dir), "--out", str(tmp_path / "cv"), "-q"] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    meta = read_checkpoint(tmp_path / "cv" / "ensemble.pt")["meta"]
    assert [m["source"] for m in meta["members"]] == [str(tmp_path / "cv" / f"fold{i}" / "best.pt") for i in (1, 2)]
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["k"] == 2


def test_ensemble_serves_and_evaluates_like_any_model(trained_run, synth_dir, tmp_path):
    from fastapi.testclient import TestClient

    from scenetag.workflows.evaluate import evaluate_checkpoint
    from scenetag.workflows.serve import create_app

    _, run, _ = trained_run
    other = _variant(run / "best.pt", tmp_path / "b.pt", size=56)
    make_ensemble([run / "best.pt", other], tmp_path / "e.pt", progress=False)
    client = TestClient(create_app(tmp_path / "e.pt"))
    model = client.get("/model").json()
    assert model["backbone"] == "ensemble(test_efficientnet+test_efficientnet)" and model["preprocessing"]["size"] == 56
    r = client.post("/predict", files=[("files", ("a.jpg", (synth_dir / "original" / "1.jpg").read_bytes(), "image/jpeg"))])
    want = Predictor(tmp_path / "e.pt").predict([synth_dir / "original" / "1.jpg"])[0]
    assert r.status_code == 200 and r.json()["predictions"][0]["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
    m = evaluate_checkpoint(tmp_path / "e.pt", tmp_path / "eval", data=run, split="test", progress=False)
    assert (tmp_path / "eval" / "report.html").is_file() and m["n_images"] == len(load_run_parts(run, ["test"])["test"])
