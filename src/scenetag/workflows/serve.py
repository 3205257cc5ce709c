"""Web service: ``POST /predict`` (multipart images), ``GET /health``, ``GET /model``, a page at ``/``.

The model (checkpoint or ONNX) is loaded once at start. Uploads are limited in
size and count, decoded with the same clear errors as the CLI, and never used
as file paths.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from starlette.concurrency import run_in_threadpool

from ..version import __version__
from ..data.images import DEFAULT_MAX_PIXELS, decode_image
from ..errors import DataError, UsageError
from ..infer.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass
class ServeLimits:
    max_upload_mb: float = 10.0  # whole request body
    max_files: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    body_timeout_s: float = 10.0  # longest wait for the next piece of a request body


class BodyTimeout:
    """ASGI wrapper: a client that stalls mid-upload (slowloris) is cut off after ``timeout`` s.

    The stalled request sees a disconnect, so its worker is freed and the
    server keeps serving everyone else.
    """

    def __init__(self, app, timeout: float):
        self.app, self.timeout = app, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def timed_receive():
            try:
                return await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                log.warning("request body stalled for %.0fs; dropping the connection", self.timeout)
                return {"type": "http.disconnect"}

        return await self.app(scope, timed_receive, send)


def model_info(predictor: Predictor, model_path: Path | str, limits: ServeLimits) -> dict:
    """``GET /model``: what is served and under which limits."""
    meta = predictor.meta
    return {
        "classes": predictor.classes,
        "thresholds": predictor.thresholds.tolist(),
        "backbone": meta.get("backbone"),
        "preprocessing": meta.get("preprocessing"),
        "metrics": meta.get("metrics", {}),
        "tta": predictor.tta,
        "model_file": Path(model_path).name,
        "engine": "onnxruntime" if str(model_path).endswith(".onnx") else "pytorch",
        "scenetag_version": __version__,
        "limits": {"max_upload_mb": limits.max_upload_mb, "max_files": limits.max_files, "max_pixels": limits.max_pixels},
    }


async def read_uploads(files: list[UploadFile], limits: ServeLimits) -> list | JSONResponse:
    """``(name, decoded image)`` per upload, or the error response (413 too many / too large, 422 not an image)."""
    max_bytes = int(limits.max_upload_mb * 2**20)
    if len(files) > limits.max_files:
        return JSONResponse({"detail": f"{len(files)} files sent; at most {limits.max_files} per request"}, status_code=413)
    images, total = [], 0
    for i, f in enumerate(files):
        name = (f.filename or f"file{i + 1}")[:200]  # the client's filename is only echoed back, never used as a path
        data = await f.read(max_bytes + 1)
        total += len(data)
        if total > max_bytes:
            return JSONResponse({"detail": f"upload over the {limits.max_upload_mb:g} MB limit"}, status_code=413)
        try:
            images.append((name, await run_in_threadpool(decode_image, data, name, limits.max_pixels)))
        except DataError as e:
            return JSONResponse({"detail": str(e), "file": name}, status_code=422)
    return images if images else JSONResponse({"detail": "no files"}, status_code=422)


def _body_limit(app: FastAPI, limits: ServeLimits) -> None:
    """Refuse a declared Content-Length over the limit before reading the body."""
    max_bytes = int(limits.max_upload_mb * 2**20)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > max_bytes
            except ValueError:
                return JSONResponse({"detail": "invalid Content-Length"}, status_code=400)
            if too_big:
                return JSONResponse({"detail": f"request body over the {limits.max_upload_mb:g} MB limit"}, status_code=413)
        return await call_next(request)


def create_app(model_path: Path | str, limits: ServeLimits | None = None) -> FastAPI:
    """The FastAPI app serving one model."""
    limits = limits or ServeLimits()
    predictor = Predictor(model_path, num_workers=0, max_pixels=limits.max_pixels)
    # Decoding and inference run in worker threads (the event loop stays free for /health and
    # uploads); the lock lets one inference run at a time, so it gets all the cores.
    lock = threading.Lock()
    app = FastAPI(title="scenetag", version=__version__, description="Multi-label scene tagging")
    started = time.time()
    _body_limit(app, limits)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "uptime_s": round(time.time() - started, 1)}

    @app.get("/model")
    def model() -> dict:
        return model_info(predictor, model_path, limits)

    @app.post("/predict")
    async def predict(files: list[UploadFile]) -> JSONResponse:
        images = await read_uploads(files, limits)
        if isinstance(images, JSONResponse):
            return images

        def locked_predict():
            with lock:
                return predictor.predict(images)

        results = await run_in_threadpool(locked_predict)
        return JSONResponse({"predictions": [{"filename": r.path, "labels": r.labels, "probabilities": r.probabilities} for r in results]})

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("scenetag").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, or a one-line error (busy port, unknown address, no permission)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(model_path: Path | str, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Load the model, bind the port, then serve with uvicorn (blocking); ``on_ready(url)`` once both worked."""
    import uvicorn

    limits = limits or ServeLimits()
    app = BodyTimeout(create_app(model_path, limits), limits.body_timeout_s)
    sock = listen(host, port)
    bound_port = sock.getsockname()[1]
    url = f"http://[{host}]:{bound_port}/" if ":" in host else f"http://{host}:{bound_port}/"
    log.info("serving %s on %s", model_path, url)
    if on_ready:
        on_ready(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5))
    server.run(sockets=[sock])
