"""The HTTP surface (FastAPI): OpenAI routes, error bodies, guards. Ray-free, so it is testable alone.

Ray Serve mounts the app returned by `create_app` as the router's ingress.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from router_service import __version__
from router_service.api.guards import ApiKeyAuth, BodySizeLimit, ConcurrencyLimit, error_json
from router_service.api.schema import ChatCompletionChunk, ChatCompletionRequest, ErrorResponse, ModelList
from router_service.config.service import ServerConfig
from router_service.errors import (
    CoEError,
    InvalidRequestError,
    MethodNotAllowedError,
    RouteNotFoundError,
    to_error_response,
    validation_error_to_coe,
)
from router_service.serving.batch import BatchItem, RejectedItem
from router_service.serving.metrics import Metrics, NullMetrics
from router_service.serving.service import RouterService

log = logging.getLogger("coe.http")
EXPERTS_HEADER = "x-coe-experts"


def api_keys(server: ServerConfig) -> list[str]:
    """Keys from config plus the environment variable named by `server.api_keys_env` (comma-separated)."""
    from_env = os.environ.get(server.api_keys_env, "") if server.api_keys_env else ""
    return [k for k in server.api_keys] + [k.strip() for k in from_env.split(",") if k.strip()]


async def sse(chunks: AsyncIterator[ChatCompletionChunk]) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
    except CoEError as exc:
        # Headers are already sent: report the failure in-band, the way OpenAI streams do.
        _, body, _ = to_error_response(exc)
        yield f"data: {body.model_dump_json()}\n\n"
    yield "data: [DONE]\n\n"


def parse_batch_body(raw: bytes, content_type: str) -> list[BatchItem]:
    """A JSON object with a `requests` list, or JSONL. A line that is not JSON becomes an item whose own
    validation fails, so one bad line does not sink the batch."""
    text = raw.decode("utf-8", errors="replace")
    if "jsonl" in content_type or "ndjson" in content_type:
        items: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    items.append(RejectedItem(f"line {number} is not valid JSON: {exc.msg}"))
        if not items:
            raise InvalidRequestError("the batch is empty", param="requests")
        return items
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"batch body is not valid JSON: {exc.msg}") from None
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise InvalidRequestError('expected {"requests": [chat request, ...]} or JSONL', param="requests")
    if not body["requests"]:
        raise InvalidRequestError("the batch is empty", param="requests")
    return body["requests"]


def create_app(
    get_service: Callable[[], RouterService], server: ServerConfig | None = None, metrics: Metrics | None = None
) -> FastAPI:
    server = server or ServerConfig()
    metrics = metrics or NullMetrics()
    app = FastAPI(
        title="CoE Router",
        version=__version__,
        description="OpenAI-compatible endpoint over a composition of expert LLMs.",
    )

    def error(exc: BaseException) -> JSONResponse:
        return error_json(exc, metrics)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(validation_error_to_coe(exc))

    @app.exception_handler(CoEError)
    async def _coe(_: Request, exc: CoEError) -> JSONResponse:
        return error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error(RouteNotFoundError(f"no route {request.method} {request.url.path}"))
        if exc.status_code == 405:
            return error(MethodNotAllowedError(f"method {request.method} not allowed on {request.url.path}"))
        err = InvalidRequestError(str(exc.detail))
        err.status_code = exc.status_code if 400 <= exc.status_code < 500 else 500
        return error(err)

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
        return error(exc)

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 502, 503, 504)
    }

    @app.post("/v1/chat/completions", responses=error_responses)
    async def chat_completions(body: ChatCompletionRequest):
        service = get_service()
        if body.stream:
            streamed = await service.stream(body)
            return StreamingResponse(
                sse(streamed.chunks),
                media_type="text/event-stream",
                headers={EXPERTS_HEADER: ",".join(streamed.experts), "cache-control": "no-cache"},
            )
        outcome = await service.chat(body)
        return JSONResponse(
            outcome.response.model_dump(exclude_none=True), headers={EXPERTS_HEADER: ",".join(outcome.experts)}
        )

    @app.post("/v1/batch", responses=error_responses)
    async def batch(request: Request) -> JSONResponse:
        """Body: {"requests": [chat request, ...]} as JSON, or one chat request per line (JSONL)."""
        items = parse_batch_body(await request.body(), request.headers.get("content-type", ""))
        return JSONResponse(await get_service().batch(items))

    @app.get("/v1/models", response_model=ModelList, responses=error_responses)
    async def list_models() -> ModelList:
        return get_service().models()

    @app.get("/health")
    async def health() -> JSONResponse:
        report = await get_service().health()
        return JSONResponse(report, status_code=200 if report["status"] != "unavailable" else 503)

    # Outermost first on the way in: auth, then the in-flight bound, then the body limit.
    app.add_middleware(BodySizeLimit, max_bytes=server.max_body_bytes, metrics=metrics)
    app.add_middleware(
        ConcurrencyLimit, limit=server.max_in_flight, retry_after_s=server.retry_after_s, metrics=metrics
    )
    app.add_middleware(ApiKeyAuth, keys=api_keys(server), metrics=metrics)
    return app
