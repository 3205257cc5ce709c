"""Web service: ``POST /predict`` (multipart images), ``GET /health``, ``/model``, ``/metrics``, ``/docs``, a page at ``/``.

The model (checkpoint or ONNX) is loaded once at start. Each upload is decoded in a
worker thread; the decoded images of all concurrent requests are batched together
(:mod:`.batching`) and run off the event loop, so ``/health`` answers at once under
load. A file that is not an image gets its own error in a 200 answer while the other
files are tagged. Limits: :mod:`.uploads`; who may call: :mod:`.auth`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..errors import DataError
from ..infer.predictor import Predictor
from ..version import __version__
from .auth import check_bind, require_token
from .batching import Batcher, QueueFull
from .service_metrics import ServiceMetrics, instrument
from .uploads import ServeLimits, UploadGuard, body_limit, header_timeout_protocol, listen, read_uploads

log = logging.getLogger(__name__)
RETRY_AFTER_S = 1


class FilePrediction(BaseModel):
    filename: str
    labels: list[str]
    probabilities: dict[str, float]
    error: str | None = None  # set (and labels empty) when this file could not be read as an image


class PredictResponse(BaseModel):
    predictions: list[FilePrediction]  # in upload order


class ErrorResponse(BaseModel):
    detail: Any


PREDICT_ERRORS = {
    401: {"model": ErrorResponse, "description": "missing or wrong token (a server started with --token)"},
    413: {"model": ErrorResponse, "description": "too many files, body too large, or too many pixels in one request"},
    422: {"model": ErrorResponse, "description": "no files, or a malformed multipart body"},
    503: {"model": ErrorResponse, "description": "the inference queue is full; retry after the Retry-After header's seconds"},
}


def model_info(predictor: Predictor, model_path: Path | str, limits: ServeLimits, auth: bool = False) -> dict:
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
        "auth": auth,
        "limits": {"max_upload_mb": limits.max_upload_mb, "max_files": limits.max_files, "max_pixels": limits.max_pixels, "max_batch": limits.max_batch, "max_wait_ms": limits.max_wait_ms, "max_queue": limits.max_queue},
    }


def _prepare(predictor: Predictor, name: str, data: bytes, max_pixels: int) -> np.ndarray | str:
    """One upload as a model input, or its one-line error."""
    from ..data.images import decode_image

    try:
        return predictor.prepare((name, decode_image(data, name, max_pixels)))
    except DataError as e:
        return str(e)


def _answer(predictor: Predictor, names: list[str], prepared: list, rows: list[np.ndarray]) -> dict:
    probs = iter(rows)
    good_rows = np.asarray(rows) if rows else np.zeros((0, len(predictor.classes)))
    labels = iter(predictor.labels(good_rows))
    out = []
    for name, item in zip(names, prepared):
        if isinstance(item, str):
            out.append({"filename": name, "labels": [], "probabilities": {}, "error": item})
        else:
            row = next(probs)
            out.append({"filename": name, "labels": next(labels), "probabilities": {c: round(float(v), 6) for c, v in zip(predictor.classes, row)}, "error": None})
    return {"predictions": out}


def _docs(app: FastAPI) -> None:
    """Swagger UI from the swagger-ui-bundle package: /docs works with no internet."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="scenetag API", swagger_js_url="/docs-assets/swagger-ui-bundle.js", swagger_css_url="/docs-assets/swagger-ui.css", swagger_favicon_url="/docs-assets/favicon-32x32.png")


def create_app(model_path: Path | str, limits: ServeLimits | None = None, token: str | None = None) -> FastAPI:
    """The FastAPI app serving one model; with ``token``, every data request must carry it."""
    limits = limits or ServeLimits()
    predictor = Predictor(model_path, num_workers=0, max_pixels=limits.max_pixels)
    holder: dict[str, Batcher] = {}
    metrics = ServiceMetrics(lambda: holder["batcher"].depth if "batcher" in holder else 0)

    def batcher() -> Batcher:  # made on first use (on the event loop), so an app without a lifespan run works too
        if "batcher" not in holder:
            holder["batcher"] = Batcher(predictor.probabilities, limits.max_batch, limits.max_wait_ms, limits.max_queue, on_batch=metrics.batch_size.observe)
        return holder["batcher"]

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if "batcher" in holder:  # after uvicorn has finished the requests in flight (SIGTERM: graceful)
            holder.pop("batcher").close()

    app = FastAPI(title="scenetag", version=__version__, description="Multi-label scene tagging", docs_url=None, redoc_url=None, lifespan=lifespan)
    started = time.time()
    body_limit(app, limits)
    require_token(app, token)
    instrument(app, metrics)  # outermost: counts the 401s and 413s too
    _docs(app)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "uptime_s": round(time.time() - started, 1)}

    @app.get("/model")
    def model() -> dict:
        return model_info(predictor, model_path, limits, auth=bool(token))

    @app.get("/metrics", include_in_schema=False)
    def prometheus():
        return metrics.exposition()

    @app.post("/predict", response_model=PredictResponse, responses=PREDICT_ERRORS)
    async def predict(request: Request, files: list[UploadFile]):
        uploads = await read_uploads(files, limits)
        if isinstance(uploads, JSONResponse):
            return uploads
        request.state.images = len(uploads)
        return await _predict_uploads(batcher(), predictor, uploads, limits, metrics)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("scenetag").joinpath("static/index.html").read_text(encoding="utf-8")

    return app


async def _predict_uploads(batcher: Batcher, predictor: Predictor, uploads: list[tuple[str, bytes]], limits: ServeLimits, metrics: ServiceMetrics) -> JSONResponse:
    """Decode every upload in worker threads, run the good ones through the batcher, answer per file."""
    try:
        batcher.announce(len(uploads))
    except QueueFull as e:
        return JSONResponse({"detail": f"busy: {e}"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    submitted = False
    try:
        prepared = await asyncio.gather(*(run_in_threadpool(_prepare, predictor, name, data, limits.max_pixels) for name, data in uploads))
        good = [x for x in prepared if not isinstance(x, str)]
        submitted = True
        rows = await batcher.run(good, announced=len(uploads)) if good else []
    except QueueFull as e:
        return JSONResponse({"detail": f"busy: {e}"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    finally:
        if not submitted or not good:
            batcher.announce(-len(uploads))
    metrics.images.labels("tagged").inc(len(good))
    metrics.images.labels("unreadable").inc(len(uploads) - len(good))
    return JSONResponse(_answer(predictor, [name for name, _ in uploads], prepared, rows))


def serve(model_path: Path | str, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None, on_ready: Callable[[str], None] | None = None, token: str | None = None, no_auth: bool = False) -> None:
    """Load the model, bind the port, then serve with uvicorn (blocking); ``on_ready(url)`` once both worked.

    SIGTERM / Ctrl-C: uvicorn stops accepting, finishes the requests in flight, then the batcher stops.
    """
    import uvicorn

    limits = (limits or ServeLimits()).validate()
    check_bind(host, token, "serve", no_auth)
    app = UploadGuard(create_app(model_path, limits, token), limits.body_timeout_s, int(limits.max_upload_mb * 2**20))
    sock = listen(host, port)
    bound_port = sock.getsockname()[1]
    url = f"http://[{host}]:{bound_port}/" if ":" in host else f"http://{host}:{bound_port}/"
    log.info("serving %s on %s", model_path, url)
    if on_ready:
        on_ready(url)
    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=5, limit_concurrency=limits.max_connections, http=header_timeout_protocol(limits.header_timeout_s), timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
