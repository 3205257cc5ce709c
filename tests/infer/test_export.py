from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from scenetag.checkpoint import load_model
from scenetag.cli import main
from scenetag.errors import ExportError
from scenetag.infer.export import export_onnx, export_torchscript
from scenetag.infer.onnx import load_onnx


def test_onnx_export_matches_pytorch_with_dynamic_batch(trained_run, tmp_path):
    _, run, _ = trained_run
    res = export_onnx(run / "best.pt", tmp_path / "m.onnx")
    assert res["max_abs_diff"] <= 1e-4
    sess, meta = load_onnx(tmp_path / "m.onnx")
    model, ck = load_model(run / "best.pt")
    assert meta["classes"] == ck["classes"] and meta["thresholds"] == ck["thresholds"] and meta["preprocessing"] == ck["preprocessing"]
    assert json.loads((tmp_path / "m.json").read_text()) == meta
    for n in (1, 5):
        x = torch.randn(n, 3, 48, 48)
        got = sess.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            want = torch.sigmoid(model(x)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)
    props = {p.key for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert "scenetag" in props


def test_failed_verification_leaves_no_file(trained_run, tmp_path):
    _, run, _ = trained_run
    with pytest.raises(ExportError, match="differs"):
        export_onnx(run / "best.pt", tmp_path / "m.onnx", atol=-1.0)
    assert not list(tmp_path.iterdir())


def test_torchscript_export(trained_run, tmp_path):
    _, run, _ = trained_run
    export_torchscript(run / "best.pt", tmp_path / "m.ts")
    ts = torch.jit.load(str(tmp_path / "m.ts"))
    model, _ = load_model(run / "best.pt")
    x = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(ts(x), torch.sigmoid(model(x)))


def test_cli_export_and_predict_with_onnx(trained_run, tmp_path, synth_dir, capsys):
    _, run, _ = trained_run
    assert main(["export", "--model", str(run / "best.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", "--model", str(tmp_path / "m.onnx"), str(synth_dir / "original" / "1.jpg"), "--format", "json", "--output", str(tmp_path / "o.json")]) == 0
    assert main(["predict", "--model", str(run / "best.pt"), str(synth_dir / "original" / "1.jpg"), "--format", "json", "--output", str(tmp_path / "t.json")]) == 0
    a, b = json.loads((tmp_path / "o.json").read_text())[0], json.loads((tmp_path / "t.json").read_text())[0]
    assert a["labels"] == b["labels"]
    assert max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in a["probabilities"]) < 1e-4


def test_exported_model_keeps_its_tta_setting(trained_run, tmp_path):
    """A model trained with train.tta=false must not get flip TTA back when predicted through ONNX."""
    from scenetag.checkpoint import read_checkpoint
    from scenetag.infer.predictor import Predictor

    _, run, _ = trained_run
    payload = read_checkpoint(run / "best.pt")
    payload["meta"]["config"]["train"]["tta"] = False
    torch.save(payload, tmp_path / "no_tta.pt")
    export_onnx(tmp_path / "no_tta.pt", tmp_path / "no_tta.onnx")
    assert Predictor(tmp_path / "no_tta.pt").tta is False
    assert Predictor(tmp_path / "no_tta.onnx").tta is False
    assert Predictor(run / "best.pt").tta is True and Predictor(tmp_path / "no_tta.onnx", tta=True).tta is True
