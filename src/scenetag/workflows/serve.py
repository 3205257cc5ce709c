"""Web service: ``POST /predict`` (multipart images), ``GET /health``, ``GET /model``, a page at ``/``.

The model (checkpoint or ONNX) is loaded once at start. Uploads are limited in
size and count, decoded with the same clear errors as the CLI, and never used
as file paths.
"""
from __future__ import annotations

import asyncio
import json
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
from ..data.images import DEFAULT_MAX_PIXELS, decode_image, header_pixels
from ..errors import DataError, UsageError
from ..infer.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass
class ServeLimits:
    max_upload_mb: float = 10.0  # whole request body
    max_files: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS  # one image
    max_request_pixels: int = 2 * DEFAULT_MAX_PIXELS  # all images of one request together: bounds the memory one request takes
    body_timeout_s: float = 10.0  # longest wait for the next piece of a request body
    header_timeout_s: float = 10.0  # longest wait for a request's headers to be complete
    max_connections: int = 64  # more concurrent connections get 503 at once

    def validate(self) -> "ServeLimits":
        ok = self.max_upload_mb > 0 and self.max_files >= 1 and self.max_pixels >= 1 and self.max_request_pixels >= self.max_pixels and self.body_timeout_s > 0 and self.header_timeout_s > 0 and self.max_connections >= 1
        if not ok:
            raise UsageError(f"service limits must be positive (max request pixels at least one image's): {self}")
        return self


class UploadGuard:
    """ASGI wrapper over the app, for what a route cannot see: the body as it streams in.

    * A client that stalls mid-upload (slowloris) is cut off after ``timeout`` s: the
      request sees a disconnect, so its worker is freed and everyone else is served.
    * Body bytes are counted as they arrive, so a chunked upload (no Content-Length)
      is cut at the limit with 413 instead of being spooled to disk first.
    """

    def __init__(self, app, timeout: float, max_bytes: int):
        self.app, self.timeout, self.max_bytes = app, timeout, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"bytes": 0, "over": False}

        async def guarded_receive():
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                log.warning("request body stalled for %.0fs; dropping the connection", self.timeout)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > self.max_bytes:
                    state["over"] = True
                    return {"type": "http.disconnect"}  # stop reading; the app gives up on the request
            return message

        async def guarded_send(message):
            if not state["over"]:  # once over the limit, the 413 below is the only answer
                await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"]:
            body = json.dumps({"detail": f"request body over the {self.max_bytes / 2**20:g} MB limit"}).encode()
            await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})


def model_info(predictor: Predictor, model_path: Path | str, limits: ServeLimits) -> dict:
    """``GET /model``: what is served and under which limits."""
    meta = predictor.meta
    return {
        "classes": predictor.classes,
        "thresholds": predictor.thresholds.tolist(),
        "backbone": meta.get("backbone"),
        "preprocessing": meta.get("preprocessing"),
        "metrics": meta.get("metrics", {}),
        "refit": meta.get("refit"),  # present when the metrics are a held-out estimate of a model refitted on every image
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
    uploads, total = [], 0
    for i, f in enumerate(files):
        name = (f.filename or f"file{i + 1}")[:200]  # the client's filename is only echoed back, never used as a path
        data = await f.read(max_bytes + 1)
        total += len(data)
        if total > max_bytes:
            return JSONResponse({"detail": f"upload over the {limits.max_upload_mb:g} MB limit"}, status_code=413)
        uploads.append((name, data))
    if not uploads:
        return JSONResponse({"detail": "no files"}, status_code=422)
    pixels = sum(header_pixels(data) for _, data in uploads)  # from the headers: nothing decoded yet
    if pixels > limits.max_request_pixels:
        return JSONResponse({"detail": f"the images hold {pixels:,} pixels together, over the {limits.max_request_pixels:,} a request may decode; send fewer or smaller images"}, status_code=413)
    images = []
    for name, data in uploads:
        try:
            images.append((name, await run_in_threadpool(decode_image, data, name, limits.max_pixels)))
        except DataError as e:
            return JSONResponse({"detail": str(e), "file": name}, status_code=422)
    return images


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


def header_timeout_protocol(seconds: float):
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete within ``seconds``.

    uvicorn times out idle keep-alive connections only; a client that opens many connections
    and never finishes its headers would hold them open forever.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and self._header_timer is not None:  # a request has started: its headers are in
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                log.warning("request headers not complete after %.0fs; closing the connection", seconds)
                self.transport.close()

        def connection_lost(self, exc) -> None:
            if getattr(self, "_header_timer", None) is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


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

    limits = (limits or ServeLimits()).validate()
    app = UploadGuard(create_app(model_path, limits), limits.body_timeout_s, int(limits.max_upload_mb * 2**20))
    sock = listen(host, port)
    bound_port = sock.getsockname()[1]
    url = f"http://[{host}]:{bound_port}/" if ":" in host else f"http://{host}:{bound_port}/"
    log.info("serving %s on %s", model_path, url)
    if on_ready:
        on_ready(url)
    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=5, limit_concurrency=limits.max_connections, http=header_timeout_protocol(limits.header_timeout_s))
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
