"""The HTTP surface (FastAPI): OpenAI routes, error bodies, guards. Ray-free, so it is testable alone.

Ray Serve mounts the app returned by `create_app` as the router's ingress.
"""

from __future__ import annotations

import asyncio
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
from router_service.api.guards import CALLER_STATE, ApiKeyAuth, BodySizeLimit, ConcurrencyLimit, error_json
from router_service.api.schema import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorResponse,
    ModelList,
    RoutingOptions,
)
from router_service.config.gateway import GatewayConfig
from router_service.config.service import ROUTED_MODEL_NAME, ServerConfig
from router_service.errors import (
    CoEError,
    InvalidRequestError,
    MethodNotAllowedError,
    RateLimitError,
    RouteNotFoundError,
    to_error_response,
    validation_error_to_coe,
)
from router_service.gateway.limits import Admission, Caller, KeyRing, Limiter
from router_service.serving.batch import BatchItem, RejectedItem
from router_service.serving.metrics import Metrics, NullMetrics
from router_service.serving.service import RouterService

log = logging.getLogger("coe.http")
EXPERTS_HEADER = "x-coe-experts"


def api_keys(server: ServerConfig) -> list[str]:
    """Keys from config plus the environment variable named by `server.api_keys_env` (comma-separated)."""
    from_env = os.environ.get(server.api_keys_env, "") if server.api_keys_env else ""
    return [k for k in server.api_keys] + [k.strip() for k in from_env.split(",") if k.strip()]


async def sse(
    chunks: AsyncIterator[ChatCompletionChunk],
    routing_extra: dict[str, Any] | None = None,
    on_end: Callable[[], None] | None = None,
) -> AsyncIterator[str]:
    """`routing_extra` joins the `routing` of the first chunk; `on_end` runs however the stream ends."""
    try:
        async for chunk in chunks:
            if routing_extra and chunk.routing is not None:
                chunk.routing.update(routing_extra)
                routing_extra = None
            yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
    except CoEError as exc:
        # Headers are already sent: report the failure in-band, the way OpenAI streams do.
        _, body, _ = to_error_response(exc)
        yield f"data: {body.model_dump_json()}\n\n"
    finally:
        if on_end is not None:
            on_end()
    yield "data: [DONE]\n\n"


def steer_by_budget(body: ChatCompletionRequest, admission: Admission, default_cost_weight: float) -> dict[str, Any]:
    """For a key with `near_budget: cheaper`, raise the request's λ to the floor its spend sets.
    Returns what `routing.budget` reports (empty when the key is not steered)."""
    if admission.budget_report is None or admission.cost_weight_floor is None or body.model != ROUTED_MODEL_NAME:
        return {}
    options = body.routing or RoutingOptions()
    asked = options.cost_weight if options.cost_weight is not None else default_cost_weight
    used = max(asked, admission.cost_weight_floor)
    body.routing = options.model_copy(update={"cost_weight": used})
    return {"budget": {**admission.budget_report, "cost_weight": round(used, 4), "steered": used > asked}}


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
    get_service: Callable[[], RouterService],
    server: ServerConfig | None = None,
    metrics: Metrics | None = None,
    gateway: GatewayConfig | None = None,
    activity: Any = None,
) -> FastAPI:
    """`activity` (a `serving.activity.ActivityLog` fed by the same metrics hooks) backs /dashboard."""
    server = server or ServerConfig()
    metrics = metrics or NullMetrics()
    gateway = gateway or GatewayConfig()
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

    keys = KeyRing.from_config(gateway, api_keys(server))
    limiter = Limiter.from_config(gateway) if any(c.limits.limited for c in keys.callers) else None
    charges: set[asyncio.Task] = set()  # charges of finished streams, kept referenced until they land

    async def admit(request: Request, count: int = 1) -> Admission:
        caller: Caller | None = getattr(request.state, CALLER_STATE, None)
        if limiter is None:
            return Admission(caller)
        try:
            return await limiter.admit(caller, count)
        except RateLimitError as exc:
            metrics.rate_limited((exc.code or "").removesuffix("_limit_exceeded"))
            raise

    def charge_later(admission: Admission, tokens: int, cost: float | None) -> None:
        if limiter is not None and admission.caller is not None:
            task = asyncio.get_running_loop().create_task(limiter.charge(admission.caller, tokens, cost))
            charges.add(task)
            task.add_done_callback(charges.discard)

    @app.post("/v1/chat/completions", responses=error_responses)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        admission = await admit(request)
        service = get_service()
        budget = steer_by_budget(body, admission, service.config.router.cost_weight)
        caller = admission.caller.name if admission.caller else None
        if body.stream:
            streamed = await service.stream(body, caller=caller)

            def settle() -> None:
                usage = streamed.usage
                charge_later(admission, usage.prompt_tokens + usage.completion_tokens, usage.cost)

            return StreamingResponse(
                sse(streamed.chunks, routing_extra=budget, on_end=settle),
                media_type="text/event-stream",
                headers={EXPERTS_HEADER: ",".join(streamed.experts), "cache-control": "no-cache", **admission.headers},
            )
        outcome = await service.chat(body, caller=caller)
        response = outcome.response
        if budget and response.routing is not None:
            response.routing.update(budget)
        if limiter is not None:
            await limiter.charge(admission.caller, outcome.charged_tokens, (response.routing or {}).get("cost"))
        return JSONResponse(
            response.model_dump(exclude_none=True),
            headers={EXPERTS_HEADER: ",".join(outcome.experts), **admission.headers},
        )

    @app.post("/v1/batch", responses=error_responses)
    async def batch(request: Request) -> JSONResponse:
        """Body: {"requests": [chat request, ...]} as JSON, or one chat request per line (JSONL).
        Each item counts as one request against the key's limits."""
        items = parse_batch_body(await request.body(), request.headers.get("content-type", ""))
        admission = await admit(request, len(items))
        result = await get_service().batch(items)
        if limiter is not None:
            answered = [r["response"] for r in result["results"] if r.get("status") == 200]
            tokens = sum(r.get("usage", {}).get("total_tokens", 0) for r in answered)
            cost = sum((r.get("routing") or {}).get("cost") or 0.0 for r in answered)
            await limiter.charge(admission.caller, tokens, cost)
        return JSONResponse(result, headers=admission.headers)

    @app.get("/v1/models", response_model=ModelList, responses=error_responses)
    async def list_models() -> ModelList:
        return get_service().models()

    @app.get("/health")
    async def health() -> JSONResponse:
        report = await get_service().health()
        return JSONResponse(report, status_code=200 if report["status"] != "unavailable" else 503)

    if gateway.dashboard and activity is not None:
        from router_service.api.dashboard import install_dashboard

        install_dashboard(app, get_service, activity)

    # Outermost first on the way in: auth, then the in-flight bound, then the body limit.
    app.add_middleware(BodySizeLimit, max_bytes=server.max_body_bytes, metrics=metrics)
    app.add_middleware(
        ConcurrencyLimit, limit=server.max_in_flight, retry_after_s=server.retry_after_s, metrics=metrics
    )
    app.add_middleware(ApiKeyAuth, keys=keys, metrics=metrics)
    return app
