"""ASGI middlewares that protect the router: body-size limit, API keys, and a bounded number of requests
in flight (beyond it: 429 with Retry-After instead of unbounded queueing)."""

from __future__ import annotations

import hmac
from typing import Sequence

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router_service.errors import (
    AuthenticationError,
    CoEError,
    RateLimitError,
    RequestTooLargeError,
    to_error_response,
)

OPEN_PATHS = frozenset({"/health"})


def app_path(scope: Scope) -> str:
    """The request path relative to where the app is mounted (Serve route prefixes arrive as root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


def error_json(exc: BaseException) -> JSONResponse:
    status, body, headers = to_error_response(exc)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class BodySizeLimit:
    """413 before the app sees an oversized body, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
                    await error_json(too_large)(scope, receive, send)
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
                await error_json(too_large)(scope, receive, send)
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
    """With keys configured, every path but /health needs `Authorization: Bearer <key>`. Keys are never logged."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys if k]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or app_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", [])).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        ok = scheme.lower() == b"bearer" and any(hmac.compare_digest(token.strip(), k) for k in self.keys)
        if not ok:
            exc = AuthenticationError("missing or invalid API key; send 'Authorization: Bearer <key>'",
                                      headers={"www-authenticate": "Bearer"})
            await error_json(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ConcurrencyLimit:
    """At most `limit` API requests in flight in this replica; the rest get 429 + Retry-After at once."""

    def __init__(self, app: ASGIApp, limit: int, retry_after_s: int = 1, on_reject=None) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or app_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            if self.on_reject is not None:
                self.on_reject()
            exc = RateLimitError(f"the router is at capacity ({self.limit} requests in flight); retry shortly",
                                 headers={"retry-after": str(self.retry_after_s)})
            await error_json(exc)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


__all__ = ["ApiKeyAuth", "BodySizeLimit", "ConcurrencyLimit", "CoEError", "error_json"]
