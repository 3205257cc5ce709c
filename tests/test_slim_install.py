"""The slim install: `pip install scenetag` (no extras) predicts and serves an exported ONNX model without torch.

Builds a separate venv from the same package index as `make test`, so it runs the
package exactly as a deployment would get it (about 20-40 s, once per session).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import start_server

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def slim_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("slim") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return venv


@pytest.fixture(scope="session")
def onnx_model(trained_run, tmp_path_factory) -> Path:
    from scenetag.infer.export import export_onnx

    _, run, _ = trained_run
    out = tmp_path_factory.mktemp("slim_model") / "m.onnx"
    export_onnx(run / "best.pt", out)
    return out


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "scenetag"), *args], capture_output=True, text=True, timeout=300)


def test_no_training_package_is_installed(slim_venv):
    probe = "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in ['torch', 'torchvision', 'timm', 'sklearn', 'onnxruntime', 'fastapi']}))"
    found = json.loads(subprocess.run([str(slim_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert found == {"torch": False, "torchvision": False, "timm": False, "sklearn": False, "onnxruntime": True, "fastapi": True}


def test_predict_gives_the_full_installs_answers(slim_venv, onnx_model, synth_dir, tmp_path):
    from scenetag.infer.predictor import Predictor

    images = [synth_dir / "original" / f"{i}.jpg" for i in (1, 2, 3)]
    out = tmp_path / "p.json"
    r = _run(slim_venv, "predict", "--model", str(onnx_model), *map(str, images), "--output", str(out), "--output-format", "json", "-q")
    assert r.returncode == 0, r.stderr
    slim = {Path(p["path"]).name: p for p in json.loads(out.read_text())}
    for want in Predictor(onnx_model).predict(images):
        got = slim[Path(want.path).name]
        assert got["labels"] == want.labels
        assert max(abs(got["probabilities"][c] - want.probabilities[c]) for c in want.probabilities) <= 1e-6
    r = _run(slim_venv, "train", "--data", str(synth_dir), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "pip install 'scenetag[train]'" in r.stderr


def test_serve_answers_without_torch(slim_venv, onnx_model, synth_dir):
    proc, url = start_server(["serve", "--model", str(onnx_model)], command=[str(slim_venv / "bin" / "scenetag")])
    url = url.rstrip("/")
    try:
        import httpx

        img = (synth_dir / "original" / "1.jpg").read_bytes()
        r = httpx.post(url + "/predict", files=[("files", ("a.jpg", img, "image/jpeg")), ("files", ("b.jpg", b"text", "image/jpeg"))], timeout=60)
        a, b = r.json()["predictions"]
        assert r.status_code == 200 and a["labels"] and a["error"] is None and "b.jpg" in b["error"]
        assert httpx.get(url + "/docs").status_code == 200 and httpx.get(url + "/metrics").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
