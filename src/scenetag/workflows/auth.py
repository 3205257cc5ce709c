"""Who may call a scenetag web app (``serve``, ``review``): loopback by default, a shared token elsewhere.

A request carries the token as ``Authorization: Bearer <token>`` (or ``?token=`` where a
browser cannot set headers, e.g. an ``<img>`` source); it is compared in constant time.
The page itself, ``/health`` and the API docs stay open: they hold no data and let a
person (or a load balancer) reach the form that asks for the token. The web stack is
imported only by :func:`require_token`, so the CLI reads the rest cheaply.
"""
from __future__ import annotations

import hmac
import os
from typing import Iterable

from ..errors import UsageError

LOOPBACK = ("127.0.0.1", "::1", "localhost")
TOKEN_ENV = "SCENETAG_TOKEN"
OPEN_PATHS = ("/", "/health", "/docs", "/openapi.json")
OPEN_PREFIXES = ("/docs-assets/",)


def token_from(flag: str | None) -> str | None:
    """The token of ``--token``, else of ``$SCENETAG_TOKEN``; None when neither is set (an empty value is no token)."""
    return flag or os.environ.get(TOKEN_ENV) or None


def check_bind(host: str, token: str | None, what: str, no_auth: bool = False) -> None:
    """Refuse to listen on a non-loopback address without a token (unless ``no_auth`` says so explicitly)."""
    if host in LOOPBACK or token or no_auth:
        return
    raise UsageError(f"{what} on {host} would answer anyone who can reach it: give --token (or ${TOKEN_ENV}), or --no-auth to allow that explicitly")


def presented_token(request) -> str | None:
    """The token a request carries (a Starlette request), or None."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.query_params.get("token")


def token_matches(presented: str | None, token: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


class TokenGuard:
    """Plain ASGI middleware: 401 to a request without the token, unless its path is open."""

    def __init__(self, app, token: str, open_paths: Iterable[str], open_prefixes: Iterable[str]):
        self.app, self.token = app, token
        self.open_paths, self.open_prefixes = frozenset(open_paths), tuple(open_prefixes)

    async def __call__(self, scope, receive, send):
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in self.open_paths or path.startswith(self.open_prefixes) or token_matches(presented_token(Request(scope)), self.token):
            return await self.app(scope, receive, send)
        refusal = JSONResponse({"detail": "missing or wrong token (send Authorization: Bearer <token>)"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await refusal(scope, receive, send)


def require_token(app, token: str | None, open_paths: Iterable[str] = OPEN_PATHS, open_prefixes: Iterable[str] = OPEN_PREFIXES) -> None:
    """Answer 401 to every request of FastAPI ``app`` without the token, except the open paths (no-op without a token)."""
    if token:
        app.add_middleware(TokenGuard, token=token, open_paths=open_paths, open_prefixes=open_prefixes)
