from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from scenetag.workflows.serve import ServeLimits, create_app


@pytest.fixture(scope="module")
def client(trained_run):
    _, run, _ = trained_run
    return TestClient(create_app(run / "best.pt", ServeLimits(max_upload_mb=1.0, max_files=3, max_pixels=2_000_000)))


def _jpeg(color=(200, 120, 40), size=(96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def test_health_model_page_docs(client):
    assert client.get("/health").json()["status"] == "ok"
    m = client.get("/model").json()
    assert m["classes"] == ["desert", "mountains", "sea", "sunset", "trees"] and len(m["thresholds"]) == 5
    assert m["backbone"] == "test_efficientnet" and m["engine"] == "pytorch"
    page = client.get("/")
    assert page.status_code == 200 and "<input id=\"file\"" in page.text and "http" not in page.text.split("<script>")[1].split("fetch(")[0]
    assert client.get("/docs").status_code == 200 and "/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_one_and_several(client, synth_dir):
    one = client.post("/predict", files=[("files", ("a.jpg", (synth_dir / "original" / "1.jpg").read_bytes(), "image/jpeg"))])
    assert one.status_code == 200
    p = one.json()["predictions"][0]
    assert p["filename"] == "a.jpg" and p["labels"] and set(p["probabilities"]) == {"desert", "mountains", "sea", "sunset", "trees"}
    many = client.post("/predict", files=[("files", (f"{i}.jpg", (synth_dir / "original" / f"{i}.jpg").read_bytes(), "image/jpeg")) for i in (1, 2, 3)])
    assert [q["filename"] for q in many.json()["predictions"]] == ["1.jpg", "2.jpg", "3.jpg"]
    assert many.json()["predictions"][0]["probabilities"] == p["probabilities"]


def test_bad_inputs(client):
    r = client.post("/predict", files=[("files", ("notes.jpg", b"hello, I am text", "image/jpeg"))])
    assert r.status_code == 422 and "notes.jpg" in r.json()["detail"] and "not a valid image" in r.json()["detail"]
    r = client.post("/predict", files=[("files", ("empty.png", b"", "image/png"))])
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = client.post("/predict", files=[("files", (f"{i}.jpg", _jpeg(), "image/jpeg")) for i in range(4)])
    assert r.status_code == 413 and "at most 3" in r.json()["detail"]
    r = client.post("/predict", files=[("files", ("big.bin", b"\0" * (1024 * 1024 + 10), "application/octet-stream"))])
    assert r.status_code == 413
    r = client.post("/predict", files=[("files", ("huge.png", _png_bomb(), "image/png"))])
    assert r.status_code == 422 and "over the limit" in r.json()["detail"]
    assert client.post("/predict").status_code == 422  # no files at all
    r = client.post("/predict", content=b'{"files": "x"}', headers={"content-type": "application/json"})
    assert r.status_code == 422  # wrong content type
    r = client.post("/predict", files=[("files", ("../../etc/passwd", _jpeg(), "image/jpeg"))])
    assert r.status_code == 200 and r.json()["predictions"][0]["filename"] == "../../etc/passwd"  # echoed, never opened


def _png_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (3000, 3000), 0).save(buf, format="PNG")  # 9 Mpx compresses to a few KB
    return buf.getvalue()


def test_onnx_model_served(trained_run, tmp_path, synth_dir):
    from scenetag.infer.export import export_onnx

    _, run, _ = trained_run
    export_onnx(run / "best.pt", tmp_path / "m.onnx")
    c = TestClient(create_app(tmp_path / "m.onnx"))
    assert c.get("/model").json()["engine"] == "onnxruntime"
    img = (synth_dir / "original" / "2.jpg").read_bytes()
    a = c.post("/predict", files=[("files", ("x.jpg", img, "image/jpeg"))]).json()["predictions"][0]
    b = TestClient(create_app(run / "best.pt")).post("/predict", files=[("files", ("x.jpg", img, "image/jpeg"))]).json()["predictions"][0]
    assert a["labels"] == b["labels"]
    for k in a["probabilities"]:
        assert a["probabilities"][k] == pytest.approx(b["probabilities"][k], abs=1e-4)


def test_concurrent_good_and_bad_requests(client, synth_dir):
    from concurrent.futures import ThreadPoolExecutor

    good = (synth_dir / "original" / "5.jpg").read_bytes()
    want = client.post("/predict", files=[("files", ("g.jpg", good, "image/jpeg"))]).json()["predictions"][0]["labels"]

    def call(i):
        bad = i % 3 == 0
        r = client.post("/predict", files=[("files", (f"{i}.jpg", good[: len(good) // 3] if bad else good, "image/jpeg"))])
        return bad, r.status_code, (r.json()["predictions"][0]["labels"] if r.status_code == 200 else None)

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(call, range(24)))
    for bad, code, labels in results:
        assert (code == 422) if bad else (code == 200 and labels == want)
    assert client.get("/health").status_code == 200
