"""The service under abuse, against the real server on a loopback port."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def server(trained_run):
    """`scenetag serve` on a free port with small limits; yields its base URL."""
    _, run, _ = trained_run
    proc = subprocess.Popen(
        [sys.executable, "-m", "scenetag", "serve", "--model", str(run / "best.pt"), "--port", "0", "--max-upload-mb", "1", "--max-request-mpx", "100", "--header-timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # printed only once the model is loaded and the port bound
        assert line.startswith("serving "), line
        yield line.split(" on ")[1].split(" ")[0].rstrip("/")
    finally:
        proc.terminate()
        proc.wait(10)


def _multipart(files: list[tuple[str, bytes]], boundary: str = "zz") -> bytes:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{n}"\r\nContent-Type: image/png\r\n\r\n'.encode() + d + b"\r\n" for n, d in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _post_chunked(url: str, chunks, timeout: float = 20) -> tuple[int, bytes]:
    host, port = url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for chunk in chunks:
            s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server may close the connection once it has answered
    data = b""
    while b"\r\n\r\n" not in data:
        part = s.recv(65536)
        if not part:
            break
        data += part
    s.close()
    return int(data.split(b" ")[1]), data


def test_chunked_upload_over_the_limit_is_cut_at_the_limit(server):
    body = _multipart([("big.png", b"x" * (3 * 2**20))])
    t0 = time.time()
    status, _ = _post_chunked(server, (body[i : i + 65536] for i in range(0, len(body), 65536)))
    assert status == 413 and time.time() - t0 < 10
    assert urllib.request.urlopen(server + "/health", timeout=5).status == 200


def test_pixels_per_request_are_bounded_before_decoding(server):
    def png(w, h):
        buf = io.BytesIO()
        Image.new("L", (w, h)).save(buf, format="PNG")  # a few KB each, many megapixels
        return buf.getvalue()

    body = _multipart([("a.png", png(6000, 6000)), ("b.png", png(6000, 6000)), ("c.png", png(6000, 6000))])  # 108 Mpx together
    req = urllib.request.Request(server + "/predict", data=body, headers={"Content-Type": "multipart/form-data; boundary=zz"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=20)
    assert e.value.code == 413 and "a request may decode" in json.loads(e.value.read())["detail"]
    small = _multipart([("s.png", png(64, 64))])
    ok = urllib.request.urlopen(urllib.request.Request(server + "/predict", data=small, headers={"Content-Type": "multipart/form-data; boundary=zz"}), timeout=20)
    assert ok.status == 200 and len(json.loads(ok.read())["predictions"]) == 1


def test_connections_that_never_finish_their_headers_are_closed(server):
    host, port = server.split("//")[1].split(":")
    stalled = [socket.create_connection((host, int(port)), timeout=10) for _ in range(30)]
    for s in stalled:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the end of the headers
    t0 = time.time()
    assert all(s.recv(1024) == b"" for s in stalled)  # closed by the server
    assert time.time() - t0 < 8
    for s in stalled:
        s.close()
    assert urllib.request.urlopen(server + "/health", timeout=5).status == 200
