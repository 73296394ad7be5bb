"""RouterService: validate → route → call expert(s) → shape the OpenAI response. Pure Python, no Ray.

The service owns request-level policy (limits, fallbacks, timeouts, aggregation, residency, batches);
strategies own the choice; backends own generation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Sequence

from pydantic import ValidationError

from router_service.api import shaping as responses
from router_service.serving.aggregation import make_aggregator
from router_service.serving.batch import group_by_expert, order_groups
from router_service.config.service import ROUTED_MODEL_NAME, ServiceConfig
from router_service.errors import (
    CoEError,
    ExpertError,
    ExpertTimeoutError,
    ExpertUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
    to_error_response,
)
from router_service.experts.base import ExpertBackend
from router_service.routing.embedding_batcher import MicroBatchingEmbedder
from router_service.serving.fanout import fan_out
from router_service.serving.metrics import Metrics, NullMetrics
from router_service.serving.residency import ResidencyManager
from router_service.api.schema import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ModelCard, ModelList, new_completion_id
from router_service.routing.strategies.base import RoutingStrategy
from router_service.domain import (
    ExpertCard,
    ExpertChoice,
    ExpertDelta,
    ExpertReply,
    ExpertRequest,
    GenerationParams,
    Message,
    Query,
    RoutingDecision,
)

log = logging.getLogger("coe.router")
_RETRYABLE = (ExpertError, ExpertTimeoutError, ExpertUnavailableError)


def cards_from_config(config: ServiceConfig) -> list[ExpertCard]:
    return [
        ExpertCard(id=e.id, skills=tuple(e.skills), input_cost_per_mtok=e.cost.input_per_mtok,
                   output_cost_per_mtok=e.cost.output_per_mtok, generalist=e.generalist,
                   description=e.description)
        for e in config.experts
    ]


@dataclass
class ChatOutcome:
    response: ChatCompletionResponse
    experts: list[str]


@dataclass
class StreamOutcome:
    decision: RoutingDecision | None
    experts: list[str]
    chunks: AsyncIterator[ChatCompletionChunk]


@dataclass
class _Plan:
    request_id: str
    model: str
    decision: RoutingDecision | None
    candidates: list[str]          # single-answer path: tried in order until one answers
    aggregate_over: list[str]      # >1 → aggregated path over these experts
    expert_request: ExpertRequest
    include_usage: bool = False
    started: float = field(default_factory=time.perf_counter)


class RouterService:
    def __init__(self, config: ServiceConfig, backends: Mapping[str, ExpertBackend],
                 strategies: Mapping[str, RoutingStrategy], default_strategy: str | None = None,
                 metrics: Metrics | None = None) -> None:
        missing = [e for e in config.expert_ids if e not in backends]
        if missing:
            raise ValueError(f"no backend for experts {missing}")
        if not strategies:
            raise ValueError("at least one routing strategy is required")
        self.config = config
        self.backends = dict(backends)
        self.strategies = dict(strategies)
        self.default_strategy = default_strategy or config.router.strategy
        if self.default_strategy not in self.strategies:
            raise ValueError(f"default strategy '{self.default_strategy}' was not built")
        self.metrics = metrics or NullMetrics()
        self.cards = cards_from_config(config)
        self.cards_by_id = {c.id: c for c in self.cards}
        self.residency = ResidencyManager(self.backends, config.residency.max_resident_experts,
                                          config.residency.load_window_s)
        agg = config.aggregation
        timeout = config.expert(agg.aggregator).timeout_s if agg.aggregator else config.server.request_timeout_s
        self.aggregator = make_aggregator(agg, self.backends, timeout)
        self._batchers: dict[int, MicroBatchingEmbedder] = {}
        # Router settings naming an expert that is not deployed (split deployment): field → expert id.
        self.unresolved: dict[str, str] = {}

    # -- public API ---------------------------------------------------------------------------
    def models(self) -> ModelList:
        data = [ModelCard(id=ROUTED_MODEL_NAME, description="Routed composition of experts")]
        data += [ModelCard(id=c.id, description=c.description or None) for c in self.cards]
        return ModelList(data=data)

    async def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """Router liveness plus each resident expert's health; 'degraded' while some expert is down."""

        async def check(expert_id: str, backend: ExpertBackend) -> bool:
            if not self.residency.is_resident(expert_id):
                return True  # offloaded on purpose; it is loaded when needed
            try:
                return bool(await asyncio.wait_for(backend.health(), timeout=timeout_s))
            except Exception:
                return False

        results = await asyncio.gather(*(check(e, b) for e, b in self.backends.items()))
        experts = dict(zip(self.backends, results))
        status = "ok" if all(results) else ("degraded" if any(results) else "unavailable")
        if status == "ok" and self.unresolved:
            status = "degraded"
        report: dict[str, Any] = {"status": status, "experts": experts, "strategy": self.default_strategy}
        if self.unresolved:
            report["unresolved"] = self.unresolved
        if self.residency.enabled:
            report["resident"] = self.residency.resident_ids()
            report["residency"] = {k: v for k, v in self.residency.stats.snapshot().items() if k != "load_log"}
        return report

    def route(self, query: Query) -> RoutingDecision:
        return self._strategy_for(query.strategy).route(query, self.cards)

    async def decide(self, request: ChatCompletionRequest) -> RoutingDecision | None:
        """The routing decision the service would make for `request` (None for a direct expert call)."""
        return (await self._plan(request)).decision

    async def chat(self, request: ChatCompletionRequest) -> ChatOutcome:
        plan = await self._plan(request)
        return await self._execute(plan)

    async def stream(self, request: ChatCompletionRequest) -> StreamOutcome:
        """Route and wait for the first piece, so failures before any output are still HTTP errors."""
        plan = await self._plan(request)
        plan.include_usage = bool(request.stream_options and request.stream_options.include_usage)
        if len(plan.aggregate_over) > 1:
            return await self._stream_aggregated(plan)
        expert_id, first, iterator = await self._open_stream(plan)
        routing = responses.routing_info(plan.decision, [expert_id])
        return StreamOutcome(plan.decision, [expert_id],
                             self._stream_chunks(plan, [expert_id], routing, first, iterator, expert_id))

    async def batch(self, items: Sequence[Any]) -> dict[str, Any]:
        """Answer many chat requests: route all, group by assigned expert, run group by group.

        Results come back in input order; a bad item gets its own error and never fails the batch.
        """
        if len(items) > self.config.server.max_batch_items:
            raise InvalidRequestError(f"a batch holds at most {self.config.server.max_batch_items} requests, "
                                      f"got {len(items)}", param="requests", code="batch_too_large")
        before = self.residency.stats.snapshot()
        started = time.perf_counter()
        results: list[dict[str, Any] | None] = [None] * len(items)
        plans: list[_Plan | None] = [None] * len(items)
        for index, raw in enumerate(items):
            try:
                if isinstance(raw, CoEError):
                    raise raw
                request = ChatCompletionRequest.model_validate(raw)
                if request.stream:
                    raise InvalidRequestError("streaming is not available inside a batch", param="stream")
                plans[index] = await self._plan(request)
            except (ValidationError, CoEError) as exc:
                results[index] = _error_item(index, exc)
        assignments = [p.candidates[0] if p is not None else None for p in plans]
        groups = order_groups(group_by_expert(assignments), self.residency.resident_ids())
        for expert_id, indices in groups:
            outcomes = await asyncio.gather(*(self._execute(plans[i]) for i in indices), return_exceptions=True)
            for i, outcome in zip(indices, outcomes):
                if isinstance(outcome, BaseException):
                    results[i] = _error_item(i, outcome)
                else:
                    results[i] = {"index": i, "status": 200, "experts": outcome.experts,
                                  "response": outcome.response.model_dump(exclude_none=True)}
        after = self.residency.stats.snapshot()
        stats = {
            "requests": len(items), "groups": [{"expert": e, "size": len(ix)} for e, ix in groups],
            "loads": after["loads"] - before["loads"], "offloads": after["offloads"] - before["offloads"],
            "switch_seconds": round(after["switch_seconds"] - before["switch_seconds"], 4),
            "queue_wait_seconds": round(after["queue_wait_seconds"] - before["queue_wait_seconds"], 4),
            # The snapshot keeps only the last 50 loads, so take this batch's from the end by count.
            "load_order": after["load_log"][-(after["loads"] - before["loads"]):] if after["loads"] > before["loads"] else [],
            "seconds": round(time.perf_counter() - started, 4)}
        return {"object": "batch.result", "results": results, "stats": stats}

    # -- planning -----------------------------------------------------------------------------
    def _batcher(self, embedder) -> MicroBatchingEmbedder:
        key = id(embedder)
        if key not in self._batchers:
            router = self.config.router
            self._batchers[key] = MicroBatchingEmbedder(
                embedder, window_s=router.micro_batch_window_ms / 1000, max_batch=router.micro_batch_max,
                cache_size=router.embedding_cache_size)
        return self._batchers[key]

    def _strategy_for(self, name: str | None) -> RoutingStrategy:
        key = name or self.default_strategy
        if key not in self.strategies:
            raise InvalidRequestError(
                f"routing strategy '{key}' is not available in this deployment; available: "
                f"{', '.join(sorted(self.strategies))}", param="routing.strategy", code="unknown_strategy")
        return self.strategies[key]

    def _validate_limits(self, request: ChatCompletionRequest) -> GenerationParams:
        server = self.config.server
        max_tokens = request.requested_max_tokens()
        if max_tokens is not None and max_tokens > server.max_tokens_limit:
            param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
            raise InvalidRequestError(f"'{param}' must be at most {server.max_tokens_limit}, got {max_tokens}",
                                      param=param, code="invalid_value")
        chars = sum(len(m.text()) for m in request.messages)
        if chars > server.max_prompt_chars:
            raise InvalidRequestError(f"prompt is {chars} characters; the limit is {server.max_prompt_chars}",
                                      param="messages", code="context_length_exceeded")
        if not any(m.text().strip() for m in request.messages):
            raise InvalidRequestError("every message is empty", param="messages", code="invalid_value")
        structured, json_schema = request.response_format.structured() if request.response_format else (None, None)
        return GenerationParams(
            max_tokens=max_tokens or server.default_max_tokens,
            temperature=0.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=request.stop_sequences(), seed=request.seed, n=request.n or 1,
            presence_penalty=request.presence_penalty or 0.0, frequency_penalty=request.frequency_penalty or 0.0,
            logprobs=bool(request.logprobs), top_logprobs=request.top_logprobs or 0,
            structured=structured, json_schema=json_schema)

    @staticmethod
    def _check_one_answer(request: ChatCompletionRequest, top_k: int) -> None:
        """Several experts' answers are merged into one text (vote picks one, synthesize writes a new one),
        so there is no single token stream to give logprobs for, and one merged answer, not n."""
        if top_k <= 1:
            return
        for param, wanted in (("n", (request.n or 1) > 1), ("logprobs", bool(request.logprobs))):
            if wanted:
                raise InvalidRequestError(
                    f"'{param}' is not supported when several experts answer (routing.top_k={top_k}, or "
                    f"aggregation enabled): their answers are merged into one", param=param,
                    code="unsupported_parameter")

    async def _plan(self, request: ChatCompletionRequest) -> _Plan:
        params = self._validate_limits(request)
        messages = [Message(m.role, m.text()) for m in request.messages]
        request_id = new_completion_id()
        expert_request = ExpertRequest(request_id=request_id, messages=messages, params=params)
        options = request.routing
        if request.model in self.backends:
            if options is not None:
                raise InvalidRequestError("'routing' only applies to model 'coe'", param="routing",
                                          code="invalid_value")
            return _Plan(request_id, request.model, None, [request.model], [request.model], expert_request)
        if request.model != ROUTED_MODEL_NAME:
            raise ModelNotFoundError(
                f"The model '{request.model}' does not exist; available: "
                f"{', '.join(m.id for m in self.models().data)}", param="model")
        router_cfg, agg = self.config.router, self.config.aggregation
        default_k = agg.max_experts if agg.enabled else router_cfg.top_k
        top_k = options.top_k if options and options.top_k is not None else default_k
        if top_k > len(self.cards):
            raise InvalidRequestError(f"'routing.top_k' is {top_k} but only {len(self.cards)} experts exist",
                                      param="routing.top_k", code="invalid_value")
        self._check_one_answer(request, top_k)
        cost_weight = options.cost_weight if options and options.cost_weight is not None else router_cfg.cost_weight
        query = Query.from_messages(messages, strategy=options.strategy if options else None,
                                    cost_weight=cost_weight, top_k=top_k)
        strategy = self._strategy_for(query.strategy)
        routing_started = time.perf_counter()
        if strategy.needs_embedding and strategy.embedder is not None:
            # Shared, cached embedding of this prompt alone; scoring after it is sub-millisecond.
            query = dataclasses.replace(query, embedding=await self._batcher(strategy.embedder).embed(query.text))
            decision = strategy.route(query, self.cards)
        else:
            decision = await asyncio.to_thread(strategy.route, query, self.cards)
        self.metrics.routing_latency(strategy.name, time.perf_counter() - routing_started)
        candidates = list(decision.expert_ids[:1])
        if router_cfg.allow_fallback:
            ranked = sorted(decision.scores, key=lambda i: -decision.scores[i])
            candidates += [i for i in ranked if i not in candidates]
            if router_cfg.default_expert and router_cfg.default_expert not in candidates:
                candidates.append(router_cfg.default_expert)
        return _Plan(request_id, request.model, decision, candidates, list(decision.expert_ids), expert_request)

    # -- execution ----------------------------------------------------------------------------
    async def _execute(self, plan: _Plan) -> ChatOutcome:
        if len(plan.aggregate_over) > 1:
            return await self._execute_aggregated(plan)
        reply = await self._call_with_fallback(plan)
        cost = responses.cost_of(self.cards_by_id, [(reply.expert_id, reply.prompt_tokens, reply.completion_tokens)])
        response = responses.completion(plan.model, reply.choices, reply.prompt_tokens, reply.completion_tokens,
                                        responses.routing_info(plan.decision, [reply.expert_id], cost))
        self._log(plan, [reply.expert_id], 200)
        return ChatOutcome(response, [reply.expert_id])

    def _timeout(self, expert_id: str) -> float:
        return self.config.expert(expert_id).timeout_s

    async def _call_one(self, expert_id: str, request: ExpertRequest) -> ExpertReply:
        backend = self.backends[expert_id]
        try:
            async with self.residency.use(expert_id):
                return await asyncio.wait_for(backend.chat(request), timeout=self._timeout(expert_id))
        except asyncio.TimeoutError:
            raise ExpertTimeoutError(f"expert '{expert_id}' timed out after {self._timeout(expert_id)}s") from None
        except CoEError:
            raise
        except Exception as exc:  # a backend bug must not become a router 500
            raise ExpertError(f"expert '{expert_id}' failed: {type(exc).__name__}: {exc}") from exc

    async def _call_with_fallback(self, plan: _Plan) -> ExpertReply:
        last_error: CoEError | None = None
        for expert_id in plan.candidates:
            try:
                return await self._call_one(expert_id, plan.expert_request)
            except _RETRYABLE as exc:
                last_error = exc
                self._note_failure(plan, expert_id, exc)
        raise self._final_error(plan, last_error)

    async def _gather(self, plan: _Plan):
        deadline = self.config.aggregation.deadline_s
        result = await fan_out(plan.aggregate_over, lambda e: self._call_one(e, plan.expert_request), deadline)
        for dropped in result.dropped:
            self.metrics.fallback(dropped["expert"], dropped["reason"])
        if not result.replies:
            reasons = "; ".join(f"{d['expert']}: {d['reason']}" for d in result.dropped)
            error_cls = ExpertTimeoutError if all(d["reason"] in ("deadline", "expert_timeout")
                                                  for d in result.dropped) else ExpertUnavailableError
            raise error_cls(f"no expert answered in time ({reasons})")
        return result

    def _aggregate_routing(self, plan: _Plan, fan, agg_result, answered: list[str]) -> dict[str, Any]:
        parts = [(r.expert_id, r.prompt_tokens, r.completion_tokens) for r in fan.replies]
        for extra in agg_result.extra_experts:
            parts.append((extra, max(agg_result.prompt_tokens - sum(p for _, p, _ in parts), 0),
                          max(agg_result.completion_tokens - sum(c for _, _, c in parts), 0)))
        return responses.routing_info(plan.decision, answered, responses.cost_of(self.cards_by_id, parts),
                                      answered=[r.expert_id for r in fan.replies], dropped=fan.dropped,
                                      aggregation=agg_result.details)

    async def _execute_aggregated(self, plan: _Plan) -> ChatOutcome:
        fan = await self._gather(plan)
        scores = plan.decision.scores if plan.decision else {}
        result = await self.aggregator.aggregate(plan.expert_request, fan.replies, scores)
        answered = [r.expert_id for r in fan.replies] + result.extra_experts
        routing = self._aggregate_routing(plan, fan, result, answered)
        response = responses.completion(plan.model, [ExpertChoice(result.text, result.finish_reason)],
                                        result.prompt_tokens, result.completion_tokens, routing)
        self._log(plan, answered, 200)
        return ChatOutcome(response, answered)

    async def _stream_aggregated(self, plan: _Plan) -> StreamOutcome:
        fan = await self._gather(plan)
        scores = plan.decision.scores if plan.decision else {}
        result, deltas = await self.aggregator.stream(plan.expert_request, fan.replies, scores)
        answered = [r.expert_id for r in fan.replies] + result.extra_experts
        iterator = deltas.__aiter__()
        source = result.extra_experts[0] if result.extra_experts else answered[0]
        first = await self._next_delta(source, iterator)
        routing = self._aggregate_routing(plan, fan, result, answered)
        return StreamOutcome(plan.decision, answered,
                             self._stream_chunks(plan, answered, routing, first, iterator, source))

    def _note_failure(self, plan: _Plan, expert_id: str, exc: CoEError) -> None:
        log.warning("expert %s failed for %s: %s", expert_id, plan.request_id, exc.message)
        self.metrics.fallback(expert_id, exc.code or exc.error_type)
        if plan.decision is not None:
            plan.decision.fallback.append({"expert": expert_id, "reason": exc.code, "message": exc.message})

    @staticmethod
    def _final_error(plan: _Plan, last_error: CoEError | None) -> CoEError:
        if last_error is None:
            return ExpertUnavailableError("no expert could take the request")
        if len(plan.candidates) > 1:
            return ExpertUnavailableError(
                f"all candidate experts failed ({', '.join(plan.candidates)}); last error: {last_error.message}")
        return last_error

    async def _open_stream(self, plan: _Plan) -> tuple[str, ExpertDelta | None, Any]:
        last_error: CoEError | None = None
        for expert_id in plan.candidates:
            # Held until the stream ends (see _stream_chunks), so the expert is not evicted mid-answer.
            residency = self.residency.use(expert_id)
            try:
                await residency.__aenter__()
            except _RETRYABLE as exc:
                last_error = exc
                self._note_failure(plan, expert_id, exc)
                continue
            iterator = None
            try:
                iterator = _Held(self.backends[expert_id].stream(plan.expert_request).__aiter__(), residency)
                first = await self._next_delta(expert_id, iterator)
                return expert_id, first, iterator
            except BaseException as exc:
                if iterator is not None:
                    await iterator.aclose()
                else:
                    await residency.__aexit__(None, None, None)
                if not isinstance(exc, _RETRYABLE):
                    raise
                last_error = exc
                self._note_failure(plan, expert_id, exc)
        raise self._final_error(plan, last_error)

    async def _next_delta(self, expert_id: str, iterator: Any) -> ExpertDelta | None:
        try:
            return await asyncio.wait_for(iterator.__anext__(), timeout=self._timeout(expert_id))
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise ExpertTimeoutError(f"expert '{expert_id}' timed out after {self._timeout(expert_id)}s") from None
        except CoEError:
            raise
        except Exception as exc:
            raise ExpertError(f"expert '{expert_id}' failed: {type(exc).__name__}: {exc}") from exc

    async def _stream_chunks(self, plan: _Plan, answered: list[str], routing: dict[str, Any],
                             first: ExpertDelta | None, iterator: Any, source: str):
        status = 200
        try:
            async for chunk in responses.chunks(plan.request_id, plan.model, routing, first,
                                                lambda: self._next_delta(source, iterator), plan.include_usage,
                                                plan.expert_request.params.n):
                yield chunk
        except BaseException:
            status = 499  # client went away or the expert failed mid-stream
            raise
        finally:
            await _close(iterator)  # cancels the expert's generation when the client disconnects
            self._log(plan, answered, status)

    def _log(self, plan: _Plan, experts: Sequence[str], status: int) -> None:
        for expert in experts:
            self.metrics.request(expert, status)
        log.info(json.dumps({
            "event": "request", "request_id": plan.request_id,
            "strategy": plan.decision.strategy if plan.decision else "direct",
            "experts": list(experts), "status": status,
            "latency_ms": round((time.perf_counter() - plan.started) * 1000, 1)}))


class _Held:
    """An expert's delta iterator that releases its residency claim when closed."""

    def __init__(self, inner: Any, residency: Any) -> None:
        self.inner = inner
        self.residency = residency
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.inner.__anext__()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await _close(self.inner)
        finally:
            await self.residency.__aexit__(None, None, None)


def _error_item(index: int, exc: BaseException) -> dict[str, Any]:
    status, body, _ = to_error_response(exc)
    return {"index": index, "status": status, "experts": [], "error": body.error.model_dump()}


async def _close(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken stream must not mask the real error
            pass
