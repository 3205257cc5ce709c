from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from scenetag.cli import main
from scenetag.infer.predictor import Predictor, expand_paths, shard


@pytest.fixture
def folder(synth_dir, tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for i in range(1, 6):
        shutil.copy(synth_dir / "original" / f"{i}.jpg", d / f"{i}.jpg")
    shutil.copy(synth_dir / "original" / "6.jpg", d / "sub" / "6.jpg")
    (d / "broken.jpg").write_text("not really a jpeg")
    return d


def test_predictor_on_folder_with_corrupt_file(trained_run, folder):
    _, run, _ = trained_run
    pred = Predictor(run / "best.pt")
    paths = expand_paths([folder])
    assert len(paths) == 7 and any(p.name == "6.jpg" for p in paths)  # recursive
    res = pred.predict(paths)
    bad = [r for r in res if r.error]
    assert len(bad) == 1 and "broken.jpg" in bad[0].error and "not a valid image" in bad[0].error
    for r in res:
        if not r.error:
            assert set(r.probabilities) == set(pred.classes)
            assert len(r.labels) >= 1  # fallback: at least the top label
            above = [c for c in pred.classes if r.probabilities[c] >= pred.thresholds[pred.classes.index(c)]]
            assert set(above) <= set(r.labels)


def test_prediction_is_deterministic_and_matches_manual_preprocessing(trained_run, synth_dir):
    import torch

    from scenetag.checkpoint import load_model
    from scenetag.data.preprocessing import Preprocessing
    from scenetag.data.transforms import eval_tensor

    _, run, _ = trained_run
    p = synth_dir / "original" / "3.jpg"
    pred = Predictor(run / "best.pt", tta=False)
    a = pred.predict([p])[0]
    model, meta = load_model(run / "best.pt")
    x = eval_tensor(Image.open(p).convert("RGB"), Preprocessing.from_dict(meta["preprocessing"]))
    with torch.no_grad():
        want = torch.sigmoid(model(x[None]))[0].numpy()
    np.testing.assert_allclose([a.probabilities[c] for c in pred.classes], want, atol=1e-5)
    # A PIL image in greyscale / RGBA is accepted and converted.
    b = pred.predict([Image.open(p).convert("L"), Image.open(p).convert("RGBA")])
    assert all(r.error is None and r.labels for r in b)


def test_fallback_can_be_turned_off(trained_run, synth_dir):
    _, run, _ = trained_run
    pred = Predictor(run / "best.pt", fallback=False)
    pred.thresholds = np.full(len(pred.classes), 1.1)  # nothing passes
    assert pred.predict([synth_dir / "original" / "1.jpg"])[0].labels == []


def test_cli_predict_csv_json_and_exit_code(trained_run, folder, tmp_path, capsys):
    _, run, _ = trained_run
    out_csv = tmp_path / "p.csv"
    code = main(["predict", "--model", str(run / "best.pt"), str(folder), "--output", str(out_csv), "-q"])
    assert code == 3  # something was skipped
    assert "1 of 7 file(s) skipped" in capsys.readouterr().err
    rows = list(csv.DictReader(open(out_csv)))
    assert len(rows) == 7
    assert list(rows[0]) == ["path", "labels", "p_desert", "p_mountains", "p_sea", "p_sunset", "p_trees", "error"]
    assert sum(1 for r in rows if r["error"]) == 1
    out_json = tmp_path / "p.json"
    code = main(["predict", "--model", str(run / "best.pt"), str(folder / "1.jpg"), str(folder / "2.jpg"), "--format", "json", "--output", str(out_json)])
    assert code == 0
    data = json.loads(out_json.read_text())
    assert len(data) == 2 and set(data[0]) == {"path", "labels", "probabilities", "error"}
    assert main(["predict", "--model", str(run / "best.pt"), str(folder / "1.jpg")]) == 0
    assert "1.jpg" in capsys.readouterr().out


def test_shards_partition_the_inputs():
    paths = [f"{i}.jpg" for i in range(10)]
    parts = [shard(paths, f"{i}/3") for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(paths) and all(parts)
    from scenetag.data import DataError

    with pytest.raises(DataError):
        shard(paths, "4/3")


def test_evaluate_split_writes_report(trained_run, tmp_path):
    _, run, result = trained_run
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(run / "best.pt"), "--split", "test", "--out", str(out), "-q"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ["samples_f1", "micro_f1", "macro_f1", "samples_precision", "micro_precision", "macro_precision", "samples_recall", "micro_recall", "macro_recall", "hamming_loss", "subset_accuracy", "mAP", "bce_loss"]:
        assert key in m
    assert set(m["per_label"]["sea"]) >= {"precision", "recall", "f1", "ap", "support", "threshold", "ece"}
    # Same numbers as the training run's own evaluation of its test split (cache vs images: fp16 rounding).
    assert m["mAP"] == pytest.approx(result["metrics"]["test"]["mAP"], abs=0.02)
    for name in ["predictions.png", "highest_loss.png", "confusion.png", "pr_curves.png", "reliability.png", "report.html"]:
        assert (out / name).is_file(), name
    assert not (out / "curves.png").exists()  # training curves live on the run's page (RUN/index.html), not repeated here
    # Errors by kind: counts from the predictions themselves, one grid per (kind, label) that has errors.
    preds = {r["path"]: r for r in csv.DictReader(open(run / "test_predictions.csv"))}
    missed = sum(1 for r in preds.values() if "sea" in r["true"].split() and "sea" not in r["labels"].split())
    extra = sum(1 for r in preds.values() if "sea" not in r["true"].split() and "sea" in r["labels"].split())
    assert m["errors_by_kind"]["sea"] == {"missed": missed, "extra": extra}
    grids = sorted(p.name for p in out.glob("errors_*.png"))
    expected = sorted(f"errors_{kind}_{c}.png" for c, k in m["errors_by_kind"].items() for kind in ("missed", "extra") if k[kind])
    assert grids == expected and grids
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64") == 5 + len(grids) and "Errors by kind" in page  # predictions, highest loss, confusion, PR, calibration


def test_evaluate_whole_dataset(trained_run, synth_dir, tmp_path):
    _, run, _ = trained_run
    assert main(["evaluate", "--model", str(run / "best.pt"), "--data", str(synth_dir), "--out", str(tmp_path / "e"), "-q"]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["n_images"] == 60


def test_calibrated_run_stores_and_uses_temperatures(synth_dir, tmp_path):
    from scenetag.train.recipe import train

    from ..conftest import tiny_cfg

    cfg = tiny_cfg(synth_dir, **{"train.calibrate": "true"})
    cfg.train.phases = cfg.train.phases[:1]
    train(cfg, tmp_path / "r", progress=False)
    pred = Predictor(tmp_path / "r" / "best.pt")
    assert pred.temperatures is not None and len(pred.temperatures) == 5 and (pred.temperatures > 0).all()
    r = pred.predict([synth_dir / "original" / "1.jpg"])[0]
    assert r.error is None and r.labels


def test_dataset_probabilities_refuses_other_classes_and_unreadable_images(trained_run, synth_dir, tmp_path):
    import dataclasses

    from scenetag.data import DataError, load_dataset

    _, run, _ = trained_run
    pred = Predictor(run / "best.pt")
    ds = load_dataset(synth_dir).subset(range(4))
    p = pred.dataset_probabilities(ds)
    assert p.shape == (4, 5) and ((p > 0) & (p < 1)).all()
    one = pred.predict([ds.paths[2]])[0]  # row i is image i, columns in the model's class order
    np.testing.assert_allclose(p[2], [one.probabilities[c] for c in pred.classes], atol=1e-6)
    with pytest.raises(DataError, match="differ from the model's"):
        pred.dataset_probabilities(dataclasses.replace(ds, classes=("a", "b", "c", "d", "e")))
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    with pytest.raises(DataError, match="1 image.*broken.jpg"):
        pred.dataset_probabilities(dataclasses.replace(ds, paths=[bad] + list(ds.paths[1:])))
