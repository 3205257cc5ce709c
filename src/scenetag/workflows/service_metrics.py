"""What the service reports about itself: an access log line per request and ``GET /metrics`` (Prometheus text).

Each app has its own registry, so several apps in one process (tests) never share counts.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

access_log = logging.getLogger("scenetag.access")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """Requests by path and status, latency, images, batch sizes and queue depth, in one registry."""

    def __init__(self, queue_depth: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter("scenetag_requests", "HTTP requests answered", ["method", "path", "status"], registry=self.registry)
        self.latency = Histogram("scenetag_request_seconds", "Time to answer a request", ["path"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.images = Counter("scenetag_images", "Images received in /predict requests, by outcome", ["outcome"], registry=self.registry)
        self.batch_size = Histogram("scenetag_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue = Gauge("scenetag_queue_depth", "Images waiting for a batch", registry=self.registry)
        self.queue.set_function(queue_depth)

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def route_of(scope, known: frozenset[str]) -> str:
    """The route's path template (``/api/image/{index}``), so metrics keep few label values; unknown paths count as one."""
    route = getattr(scope.get("route"), "path", None)
    if route:
        return route
    return scope["path"] if scope["path"] in known else "<other>"  # answered before routing (401, 413)


class Observe:
    """Plain ASGI middleware: count and time every request and log one line for it (method, path, status, images, ms)."""

    def __init__(self, app, metrics: ServiceMetrics, known: Callable[[], frozenset[str]]):
        self.app, self.metrics, self._known_paths = app, metrics, known
        self._known: frozenset[str] | None = None

    def known(self) -> frozenset[str]:
        """The app's route paths, read once (routes are fixed once it serves)."""
        if self._known is None:
            self._known = self._known_paths()
        return self._known

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            path = route_of(scope, self.known())
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(seconds)
            images = scope.get("state", {}).get("images")
            access_log.info("%s %s %d%s %.0f ms", scope["method"], scope["path"], status["code"], f" {images} images" if images is not None else "", seconds * 1000)


def instrument(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Count and time every request of ``app``, and log one line for it."""
    app.add_middleware(Observe, metrics=metrics, known=lambda: frozenset(getattr(r, "path", "") for r in app.routes))
