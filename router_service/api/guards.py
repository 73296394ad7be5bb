"""ASGI middlewares that protect the router: body-size limit, API keys, and a bounded number of requests
in flight (beyond it: 429 with Retry-After instead of unbounded queueing)."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router_service.errors import (
    AuthenticationError,
    CoEError,
    RateLimitError,
    RequestTooLargeError,
    to_error_response,
)
from router_service.gateway.limits import KeyRing
from router_service.serving.metrics import Metrics, NullMetrics

log = logging.getLogger("coe.http")

# The dashboard page itself holds no data (it asks for a key, then calls /dashboard/api/*, which need one).
OPEN_PATHS = frozenset({"/health", "/dashboard"})
CALLER_STATE = "coe_caller"  # request.state attribute holding the authenticated `Caller`


def app_path(scope: Scope) -> str:
    """The request path relative to where the app is mounted (Serve route prefixes arrive as root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def error_json(exc: BaseException, metrics: Metrics | None = None) -> JSONResponse:
    """The one way an error leaves the router over HTTP: an OpenAI error body, counted in
    `coe_errors_total`, and logged with its traceback when it is not one of ours."""
    status, body, headers = to_error_response(exc)
    (metrics or NullMetrics()).error(body.error.type)
    if status >= 500 and not isinstance(exc, CoEError):
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class BodySizeLimit:
    """413 before the app sees an oversized body, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = RequestTooLargeError(f"request body exceeds {self.max_bytes} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await error_json(too_large, self.metrics)(scope, receive, send)
                    return
        # Buffer the body (bounded) and replay it: the app then never sees an oversized request.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await error_json(too_large, self.metrics)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ApiKeyAuth:
    """With keys configured, every path but the open ones needs `Authorization: Bearer <key>`.

    Keys are held and compared as hashes (`gateway.limits.KeyRing`) and never logged. The caller found
    (its name, hash and limits) goes into the request's state for the per-key limits and the logs."""

    def __init__(self, app: ASGIApp, keys: KeyRing, metrics: Metrics | None = None) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or app_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", [])).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        caller = self.keys.find(token.strip()) if scheme.lower() == b"bearer" and token.strip() else None
        if caller is None:
            exc = AuthenticationError(
                "missing or invalid API key; send 'Authorization: Bearer <key>'", headers={"www-authenticate": "Bearer"}
            )
            await error_json(exc, self.metrics)(scope, receive, send)
            return
        scope.setdefault("state", {})[CALLER_STATE] = caller
        await self.app(scope, receive, send)


class ConcurrencyLimit:
    """At most `limit` API requests in flight in this replica; the rest get 429 + Retry-After at once."""

    def __init__(self, app: ASGIApp, limit: int, retry_after_s: int = 1, metrics: Metrics | None = None) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.metrics = metrics or NullMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or app_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.rejected()
            exc = RateLimitError(
                f"the router is at capacity ({self.limit} requests in flight); retry shortly",
                headers={"retry-after": str(self.retry_after_s)},
            )
            await error_json(exc, self.metrics)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


__all__ = ["ApiKeyAuth", "BodySizeLimit", "ConcurrencyLimit", "CoEError", "error_json"]
