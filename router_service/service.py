"""RouterService: validate → route → call expert(s) → shape the OpenAI response. Pure Python, no Ray.

The service owns request-level policy (limits, fallbacks, timeouts, explanation of the decision);
strategies own the choice; backends own generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Sequence

from router_service.config import ROUTED_MODEL_NAME, ServiceConfig
from router_service.errors import (
    CoEError,
    ExpertError,
    ExpertTimeoutError,
    ExpertUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
)
from router_service.experts.base import ExpertBackend
from router_service.metrics import Metrics, NullMetrics
from router_service.schema import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ModelCard,
    ModelList,
    Usage,
    new_completion_id,
)
from router_service.strategies.base import RoutingStrategy
from router_service.types import (
    ExpertCard,
    ExpertDelta,
    ExpertReply,
    ExpertRequest,
    GenerationParams,
    Message,
    Query,
    RoutingDecision,
)

log = logging.getLogger("coe.router")


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
    query: Query
    decision: RoutingDecision | None
    candidates: list[str]
    expert_request: ExpertRequest
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
        self._cards_by_id = {c.id: c for c in self.cards}

    # -- public API ---------------------------------------------------------------------------
    def models(self) -> ModelList:
        data = [ModelCard(id=ROUTED_MODEL_NAME, description="Routed composition of experts")]
        data += [ModelCard(id=c.id, description=c.description or None) for c in self.cards]
        return ModelList(data=data)

    async def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """Router liveness plus each expert's health; 'degraded' while some expert is down."""

        async def check(backend: ExpertBackend) -> bool:
            try:
                return bool(await asyncio.wait_for(backend.health(), timeout=timeout_s))
            except Exception:
                return False

        results = await asyncio.gather(*(check(b) for b in self.backends.values()))
        experts = dict(zip(self.backends, results))
        status = "ok" if all(results) else ("degraded" if any(results) else "unavailable")
        return {"status": status, "experts": experts, "strategy": self.default_strategy}

    def route(self, query: Query) -> RoutingDecision:
        strategy = self._strategy_for(query.strategy)
        return strategy.route(query, self.cards)

    async def chat(self, request: ChatCompletionRequest) -> ChatOutcome:
        plan = await self._plan(request)
        reply, decision = await self._call_with_fallback(plan)
        response = ChatCompletionResponse(
            model=request.model,
            choices=[Choice(message=AssistantMessage(content=reply.text), finish_reason=reply.finish_reason)],
            usage=Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                        total_tokens=reply.prompt_tokens + reply.completion_tokens),
            routing=self._routing_info(decision, [reply.expert_id], reply),
        )
        self._log(plan, [reply.expert_id], 200)
        return ChatOutcome(response=response, experts=[reply.expert_id])

    async def stream(self, request: ChatCompletionRequest) -> StreamOutcome:
        """Route and wait for the first piece, so failures before any output are still HTTP errors."""
        plan = await self._plan(request)
        expert_id, first, rest, decision = await self._open_stream_with_fallback(plan)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        chunks = self._chunks(plan, request.model, expert_id, decision, first, rest, include_usage)
        return StreamOutcome(decision=decision, experts=[expert_id], chunks=chunks)

    # -- planning -----------------------------------------------------------------------------
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
        stop = request.stop if isinstance(request.stop, list) else ([request.stop] if request.stop else [])
        return GenerationParams(
            max_tokens=max_tokens or server.default_max_tokens,
            temperature=0.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=tuple(stop), seed=request.seed)

    async def _plan(self, request: ChatCompletionRequest) -> _Plan:
        params = self._validate_limits(request)
        messages = [Message(m.role, m.text()) for m in request.messages]
        request_id = new_completion_id()
        expert_request = ExpertRequest(request_id=request_id, messages=messages, params=params)
        options = request.routing
        if request.model == ROUTED_MODEL_NAME:
            router_cfg = self.config.router
            top_k = options.top_k if options and options.top_k is not None else router_cfg.top_k
            if top_k > len(self.cards):
                raise InvalidRequestError(f"'routing.top_k' is {top_k} but only {len(self.cards)} experts exist",
                                          param="routing.top_k", code="invalid_value")
            query = Query.from_messages(
                messages,
                strategy=options.strategy if options else None,
                cost_weight=options.cost_weight if options and options.cost_weight is not None
                else router_cfg.cost_weight,
                top_k=top_k)
            strategy = self._strategy_for(query.strategy)
            routing_started = time.perf_counter()
            decision = await asyncio.to_thread(strategy.route, query, self.cards)
            self.metrics.routing_latency(strategy.name, time.perf_counter() - routing_started)
            candidates = list(decision.expert_ids[:1])
            if router_cfg.allow_fallback:
                ranked = sorted(decision.scores, key=lambda i: -decision.scores[i])
                candidates += [i for i in ranked if i not in candidates]
                generalist = router_cfg.default_expert
                if generalist and generalist not in candidates:
                    candidates.append(generalist)
            return _Plan(request_id, query, decision, candidates, expert_request)
        if request.model in self.backends:
            if options is not None:
                raise InvalidRequestError("'routing' only applies to model 'coe'", param="routing",
                                          code="invalid_value")
            query = Query.from_messages(messages)
            return _Plan(request_id, query, None, [request.model], expert_request)
        raise ModelNotFoundError(
            f"The model '{request.model}' does not exist; available: {', '.join(m.id for m in self.models().data)}",
            param="model")

    # -- calling experts ----------------------------------------------------------------------
    def _timeout(self, expert_id: str) -> float:
        return self.config.expert(expert_id).timeout_s

    async def _call_one(self, expert_id: str, request: ExpertRequest) -> ExpertReply:
        backend = self.backends[expert_id]
        try:
            return await asyncio.wait_for(backend.chat(request), timeout=self._timeout(expert_id))
        except asyncio.TimeoutError:
            raise ExpertTimeoutError(f"expert '{expert_id}' timed out after {self._timeout(expert_id)}s") from None
        except CoEError:
            raise
        except Exception as exc:  # a backend bug must not become a router 500
            raise ExpertError(f"expert '{expert_id}' failed: {type(exc).__name__}: {exc}") from exc

    async def _call_with_fallback(self, plan: _Plan) -> tuple[ExpertReply, RoutingDecision | None]:
        last_error: CoEError | None = None
        for expert_id in plan.candidates:
            try:
                reply = await self._call_one(expert_id, plan.expert_request)
                return reply, plan.decision
            except (ExpertError, ExpertTimeoutError, ExpertUnavailableError) as exc:
                last_error = exc
                self._note_failure(plan, expert_id, exc)
        assert last_error is not None
        raise self._final_error(plan, last_error)

    def _note_failure(self, plan: _Plan, expert_id: str, exc: CoEError) -> None:
        log.warning("expert %s failed for %s: %s", expert_id, plan.request_id, exc.message)
        self.metrics.fallback(expert_id, exc.code or exc.error_type)
        if plan.decision is not None:
            plan.decision.fallback.append({"expert": expert_id, "reason": exc.code, "message": exc.message})

    @staticmethod
    def _final_error(plan: _Plan, last_error: CoEError) -> CoEError:
        if len(plan.candidates) > 1:
            return ExpertUnavailableError(
                f"all candidate experts failed ({', '.join(plan.candidates)}); last error: {last_error.message}")
        return last_error

    async def _open_stream_with_fallback(self, plan: _Plan):
        last_error: CoEError | None = None
        for expert_id in plan.candidates:
            iterator = self.backends[expert_id].stream(plan.expert_request).__aiter__()
            try:
                first = await self._next_delta(expert_id, iterator)
                return expert_id, first, iterator, plan.decision
            except (ExpertError, ExpertTimeoutError, ExpertUnavailableError) as exc:
                last_error = exc
                self._note_failure(plan, expert_id, exc)
                await _close(iterator)
        assert last_error is not None
        raise self._final_error(plan, last_error)

    async def _next_delta(self, expert_id: str, iterator: AsyncIterator[ExpertDelta]) -> ExpertDelta | None:
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

    async def _chunks(self, plan: _Plan, model: str, expert_id: str, decision: RoutingDecision | None,
                      first: ExpertDelta | None, rest: AsyncIterator[ExpertDelta],
                      include_usage: bool) -> AsyncIterator[ChatCompletionChunk]:
        completion_id = plan.request_id
        created = int(time.time())
        yield ChatCompletionChunk(id=completion_id, created=created, model=model,
                                  choices=[ChunkChoice(delta=DeltaMessage(role="assistant", content=""))],
                                  routing=self._routing_info(decision, [expert_id], None))
        delta = first
        last: ExpertDelta | None = None
        status = 200
        try:
            while delta is not None:
                last = delta
                if delta.text or delta.finish_reason:
                    yield ChatCompletionChunk(
                        id=completion_id, created=created, model=model,
                        choices=[ChunkChoice(delta=DeltaMessage(content=delta.text or None),
                                             finish_reason=delta.finish_reason)])
                if delta.finish_reason:
                    break
                delta = await self._next_delta(expert_id, rest)
            if include_usage and last is not None:
                yield ChatCompletionChunk(
                    id=completion_id, created=created, model=model, choices=[],
                    usage=Usage(prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
                                total_tokens=last.prompt_tokens + last.completion_tokens))
        except BaseException:
            status = 499
            raise
        finally:
            await _close(rest)
            self._log(plan, [expert_id], status)

    # -- explanation & logging ----------------------------------------------------------------
    def _routing_info(self, decision: RoutingDecision | None, answered: Sequence[str],
                      reply: ExpertReply | None) -> dict[str, Any]:
        if decision is None:
            info: dict[str, Any] = {"strategy": "direct", "experts": list(answered), "scores": {}}
        else:
            info = decision.to_dict()
            info["chosen"] = list(decision.expert_ids)
            info["experts"] = list(answered)
        if reply is not None:
            card = self._cards_by_id[reply.expert_id]
            info["cost"] = card.cost_of(reply.prompt_tokens, reply.completion_tokens)
        return info

    def _log(self, plan: _Plan, experts: Sequence[str], status: int) -> None:
        for expert in experts:
            self.metrics.request(expert, status)
        log.info(json.dumps({
            "event": "request", "request_id": plan.request_id,
            "strategy": plan.decision.strategy if plan.decision else "direct",
            "experts": list(experts), "status": status,
            "latency_ms": round((time.perf_counter() - plan.started) * 1000, 1)}))


async def _close(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken stream must not mask the real error
            pass


def new_request_id() -> str:
    return uuid.uuid4().hex
