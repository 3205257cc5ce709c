"""The service's defences for what arrives over the wire: size, count, pixel and time limits, bound sockets.

Uploads are limited in size and count and decoded with the same clear errors as the CLI;
a client's file name is only echoed back, never used as a path.
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket

from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import JSONResponse

from ..data.images import header_pixels
from ..errors import UsageError
from .limits import ServeLimits

log = logging.getLogger(__name__)


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


async def read_uploads(files: list[UploadFile], limits: ServeLimits) -> list[tuple[str, bytes]] | JSONResponse:
    """``(name, bytes)`` per upload, or the error response for the whole request (413 too many / too large, 422 none).

    Whether each file is an image is decided later, file by file.
    """
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
    return uploads


class BodyLimit:
    """Refuse a declared Content-Length over the limit before reading the body (plain ASGI: no per-request task)."""

    def __init__(self, app, limits: ServeLimits):
        self.app, self.limits = app, limits

    def _refusal(self, scope) -> JSONResponse | None:
        length = Request(scope).headers.get("content-length")
        if length is None:
            return None
        try:
            too_big = int(length) > int(self.limits.max_upload_mb * 2**20)
        except ValueError:
            return JSONResponse({"detail": "invalid Content-Length"}, status_code=400)
        return JSONResponse({"detail": f"request body over the {self.limits.max_upload_mb:g} MB limit"}, status_code=413) if too_big else None

    async def __call__(self, scope, receive, send):
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is not None:
            return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)


def body_limit(app: FastAPI, limits: ServeLimits) -> None:
    app.add_middleware(BodyLimit, limits=limits)


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


