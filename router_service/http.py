"""The HTTP surface (FastAPI): OpenAI routes, error bodies, body-size limit. Ray-free, so it is testable alone.

Ray Serve mounts the app returned by `create_app` as the router's ingress.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router_service import __version__
from router_service.errors import (
    CoEError,
    MethodNotAllowedError,
    RequestTooLargeError,
    RouteNotFoundError,
    InvalidRequestError,
    to_error_response,
    validation_error_to_coe,
)
from router_service.schema import ChatCompletionChunk, ChatCompletionRequest, ErrorResponse, ModelList
from router_service.service import RouterService

log = logging.getLogger("coe.http")
EXPERTS_HEADER = "x-coe-experts"


def error_json(exc: BaseException) -> JSONResponse:
    status, body, headers = to_error_response(exc)
    if status >= 500 and not isinstance(exc, CoEError):
        log.exception("unhandled error", exc_info=exc)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class BodySizeLimit:
    """Pure ASGI middleware: 413 before the body is buffered, whether or not Content-Length is sent."""

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


async def sse(chunks: AsyncIterator[ChatCompletionChunk]) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
    except CoEError as exc:
        # Headers are already sent: report the failure in-band, the way OpenAI streams do.
        _, body, _ = to_error_response(exc)
        yield f"data: {body.model_dump_json()}\n\n"
    yield "data: [DONE]\n\n"


def create_app(get_service: Callable[[], RouterService], *, max_body_bytes: int = 1_048_576) -> FastAPI:
    app = FastAPI(title="CoE Router", version=__version__,
                  description="OpenAI-compatible endpoint over a composition of expert LLMs.")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_json(validation_error_to_coe(exc))

    @app.exception_handler(CoEError)
    async def _coe(_: Request, exc: CoEError) -> JSONResponse:
        return error_json(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_json(RouteNotFoundError(f"no route {request.method} {request.url.path}"))
        if exc.status_code == 405:
            return error_json(MethodNotAllowedError(f"method {request.method} not allowed on {request.url.path}"))
        if 400 <= exc.status_code < 500:
            err = InvalidRequestError(str(exc.detail))
            err.status_code = exc.status_code
            return error_json(err)
        return error_json(exc)

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
        return error_json(exc)

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 502, 503, 504)}

    @app.post("/v1/chat/completions", responses=error_responses)
    async def chat_completions(body: ChatCompletionRequest):
        service = get_service()
        if body.stream:
            outcome = await service.stream(body)
            return StreamingResponse(sse(outcome.chunks), media_type="text/event-stream",
                                     headers={EXPERTS_HEADER: ",".join(outcome.experts),
                                              "cache-control": "no-cache"})
        outcome = await service.chat(body)
        return JSONResponse(outcome.response.model_dump(exclude_none=True),
                            headers={EXPERTS_HEADER: ",".join(outcome.experts)})

    @app.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        return get_service().models()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return await get_service().health()

    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app
