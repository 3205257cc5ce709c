from __future__ import annotations

import io
import logging
import time

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


def _error_of(r) -> str:
    assert r.status_code == 200, r.text
    (p,) = r.json()["predictions"]
    assert p["labels"] == [] and p["probabilities"] == {} and p["error"]
    return p["error"]


def test_bad_inputs(client):
    err = _error_of(client.post("/predict", files=[("files", ("notes.jpg", b"hello, I am text", "image/jpeg"))]))
    assert "notes.jpg" in err and "not a valid image" in err
    assert "empty" in _error_of(client.post("/predict", files=[("files", ("empty.png", b"", "image/png"))]))
    r = client.post("/predict", files=[("files", (f"{i}.jpg", _jpeg(), "image/jpeg")) for i in range(4)])
    assert r.status_code == 413 and "at most 3" in r.json()["detail"]
    r = client.post("/predict", files=[("files", ("big.bin", b"\0" * (1024 * 1024 + 10), "application/octet-stream"))])
    assert r.status_code == 413
    assert "over the limit" in _error_of(client.post("/predict", files=[("files", ("huge.png", _png_bomb(), "image/png"))]))
    assert client.post("/predict").status_code == 422  # no files at all
    r = client.post("/predict", content=b'{"files": "x"}', headers={"content-type": "application/json"})
    assert r.status_code == 422  # wrong content type
    r = client.post("/predict", files=[("files", ("../../etc/passwd", _jpeg(), "image/jpeg"))])
    assert r.status_code == 200 and r.json()["predictions"][0]["filename"] == "../../etc/passwd"  # echoed, never opened


def test_one_bad_file_among_good_ones_gets_its_own_error(client, synth_dir):
    good = (synth_dir / "original" / "1.jpg").read_bytes()
    alone = client.post("/predict", files=[("files", ("a.jpg", good, "image/jpeg"))]).json()["predictions"][0]
    r = client.post("/predict", files=[("files", ("a.jpg", good, "image/jpeg")), ("files", ("b.jpg", b"text", "image/jpeg")), ("files", ("c.jpg", good[:200], "image/jpeg"))])
    assert r.status_code == 200
    a, b, c = r.json()["predictions"]
    assert (a["filename"], b["filename"], c["filename"]) == ("a.jpg", "b.jpg", "c.jpg")
    assert a["error"] is None and a["labels"] == alone["labels"] and a["probabilities"] == alone["probabilities"]
    assert "b.jpg" in b["error"] and b["labels"] == [] and "c.jpg" in c["error"]


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
        return bad, r.status_code, r.json()["predictions"][0]

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(call, range(24)))
    for bad, code, p in results:
        assert code == 200 and (p["error"] is not None if bad else (p["error"] is None and p["labels"] == want))
    assert client.get("/health").status_code == 200


def test_batched_answers_equal_unbatched_prediction(trained_run, synth_dir):
    """Concurrent requests share forward passes; every probability equals the predictor's, one image at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from scenetag.infer.predictor import Predictor

    _, run, _ = trained_run
    paths = [synth_dir / "original" / f"{i}.jpg" for i in range(1, 13)]
    alone = Predictor(run / "best.pt", batch_size=1, num_workers=0).predict(paths)
    app = create_app(run / "best.pt", ServeLimits(max_batch=8, max_wait_ms=200))
    with TestClient(app) as c:
        with ThreadPoolExecutor(12) as ex:
            answers = list(ex.map(lambda p: c.post("/predict", files=[("files", (p.name, p.read_bytes(), "image/jpeg"))]).json()["predictions"][0], paths))
        exposition = c.get("/metrics").text
    for want, got in zip(alone, answers):
        assert got["labels"] == want.labels
        assert max(abs(got["probabilities"][k] - want.probabilities[k]) for k in want.probabilities) <= 1e-5
    counts = {line.split(" ")[0]: float(line.split(" ")[1]) for line in exposition.splitlines() if line.startswith("scenetag_batch_size_")}
    assert counts["scenetag_batch_size_sum"] == 12 and counts["scenetag_batch_size_count"] < 12  # some passes held several images


def test_a_full_queue_answers_503_with_retry_after(trained_run, synth_dir, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from scenetag.infer.predictor import Predictor

    slow = Predictor.probabilities
    monkeypatch.setattr(Predictor, "probabilities", lambda self, x: (time.sleep(0.3), slow(self, x))[1])
    _, run, _ = trained_run
    img = (synth_dir / "original" / "1.jpg").read_bytes()
    c = TestClient(create_app(run / "best.pt", ServeLimits(max_files=3, max_queue=3, max_batch=3)))
    with ThreadPoolExecutor(6) as ex:
        responses = list(ex.map(lambda i: c.post("/predict", files=[("files", (f"{i}{j}.jpg", img, "image/jpeg")) for j in range(3)]), range(6)))
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]
    assert c.post("/predict", files=[("files", ("x.jpg", img, "image/jpeg"))]).status_code == 200  # the queue drained


def test_metrics_access_log_docs_and_schema(client, synth_dir, caplog):
    img = (synth_dir / "original" / "1.jpg").read_bytes()
    with caplog.at_level(logging.INFO, logger="scenetag.access"):
        assert client.post("/predict", files=[("files", ("a.jpg", img, "image/jpeg")), ("files", ("b.jpg", b"no", "image/jpeg"))]).status_code == 200
        client.get("/nowhere")
    lines = [r.getMessage() for r in caplog.records if r.name == "scenetag.access"]
    assert any(line.startswith("POST /predict 200 2 images ") and line.endswith(" ms") for line in lines) and any(line.startswith("GET /nowhere 404") for line in lines)
    text = client.get("/metrics").text
    assert 'scenetag_requests_total{method="POST",path="/predict",status="200"}' in text and 'path="<other>",status="404"' in text
    assert 'scenetag_images_total{outcome="unreadable"}' in text and "scenetag_request_seconds_bucket" in text and "scenetag_queue_depth 0.0" in text
    docs = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    predict = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]
    assert {"200", "401", "413", "422", "503"} <= set(predict)
    assert predict["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")


def test_a_token_guards_the_data_but_not_the_page(trained_run):
    _, run, _ = trained_run
    c = TestClient(create_app(run / "best.pt", token="s3cret"))
    assert c.get("/model").status_code == 401 and c.post("/predict").status_code == 401 and c.get("/metrics").status_code == 401
    assert c.get("/model", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/model", headers={"Authorization": "Bearer s3cret"}).json()["auth"] is True
    assert all(c.get(path).status_code == 200 for path in ("/", "/health", "/docs", "/openapi.json"))


def test_sigterm_finishes_the_requests_in_flight(trained_run, synth_dir, monkeypatch):
    """uvicorn's graceful exit (what SIGTERM triggers) waits for a request being computed; the batcher stops after it."""
    import threading

    import httpx
    import uvicorn

    from scenetag.infer.predictor import Predictor
    from scenetag.workflows.uploads import listen

    slow = Predictor.probabilities
    monkeypatch.setattr(Predictor, "probabilities", lambda self, x: (time.sleep(1.0), slow(self, x))[1])
    _, run, _ = trained_run
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(run / "best.pt"), log_level="warning", timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    result = {}
    img = (synth_dir / "original" / "1.jpg").read_bytes()
    client = threading.Thread(target=lambda: result.update(r=httpx.post(url + "/predict", files=[("files", ("a.jpg", img, "image/jpeg"))], timeout=30)))
    client.start()
    time.sleep(0.5)  # the request is being computed
    server.should_exit = True  # what uvicorn's SIGTERM handler does
    client.join(30)
    thread.join(30)
    assert result["r"].status_code == 200 and result["r"].json()["predictions"][0]["labels"]
    assert not thread.is_alive()
