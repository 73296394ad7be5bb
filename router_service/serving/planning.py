"""Planning one request: limits → GenerationParams, the strategy, its decision and the candidate experts.

A plan is everything the service needs to call experts; nothing here calls one. Routing runs on an
embedding of this prompt alone (shared, cached micro-batches), so a decision never depends on others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router_service.api.schema import ChatCompletionRequest, new_completion_id
from router_service.config.service import ROUTED_MODEL_NAME, ServerConfig, ServiceConfig
from router_service.domain import ExpertCard, ExpertRequest, GenerationParams, Message, Query, RoutingDecision
from router_service.errors import InvalidRequestError, ModelNotFoundError
from router_service.routing.embedding import Embedder
from router_service.routing.embedding_batcher import MicroBatchingEmbedder
from router_service.routing.strategies.base import RoutingStrategy
from router_service.routing.strategies.skill import SkillStrategy
from router_service.serving.metrics import Metrics
from router_service.serving.residency import ResidencyStats

if TYPE_CHECKING:
    from router_service.serving.skill_annotation import ServedSkillAnnotator

log = logging.getLogger("coe.router")


@dataclass
class Plan:
    request_id: str
    model: str
    decision: RoutingDecision | None
    candidates: list[str]  # single-answer path: tried in order until one answers
    aggregate_over: list[str]  # >1 → aggregated path over these experts
    expert_request: ExpertRequest
    include_usage: bool = False
    # A batch's own residency numbers (loads it started, its waits); None outside a batch.
    record: ResidencyStats | None = None
    started: float = field(default_factory=time.perf_counter)
    caller: str | None = None  # the API key's configured name, for the request log
    # Per-expert call deadlines that replace the expert's timeout_s (waiting for a cold expert to start).
    deadlines: dict[str, float] = field(default_factory=dict)
    cold_start: dict[str, str] | None = None  # what happened when the chosen expert had no replica
    cold_policy: str | None = None  # routing.cold_start of the request, if it set one


def generation_params(request: ChatCompletionRequest, server: ServerConfig) -> GenerationParams:
    """The request's sampling settings, within the server's limits (a 400 naming the field otherwise)."""
    max_tokens = request.requested_max_tokens()
    if max_tokens is not None and max_tokens > server.max_tokens_limit:
        param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        raise InvalidRequestError(
            f"'{param}' must be at most {server.max_tokens_limit}, got {max_tokens}", param=param, code="invalid_value"
        )
    chars = sum(len(m.text()) for m in request.messages)
    if chars > server.max_prompt_chars:
        raise InvalidRequestError(
            f"prompt is {chars} characters; the limit is {server.max_prompt_chars}",
            param="messages",
            code="context_length_exceeded",
        )
    if not any(m.text().strip() for m in request.messages):
        raise InvalidRequestError("every message is empty", param="messages", code="invalid_value")
    structured, json_schema = request.response_format.structured() if request.response_format else (None, None)
    return GenerationParams(
        max_tokens=max_tokens or server.default_max_tokens,
        temperature=0.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        stop=request.stop_sequences(),
        seed=request.seed,
        n=request.n or 1,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
        structured=structured,
        json_schema=json_schema,
    )


def check_one_answer(request: ChatCompletionRequest, top_k: int) -> None:
    """Several experts' answers are merged into one text (vote picks one, synthesize writes a new one),
    so there is no single token stream to give logprobs for, and one merged answer, not n."""
    if top_k <= 1:
        return
    for param, wanted in (("n", (request.n or 1) > 1), ("logprobs", bool(request.logprobs))):
        if wanted:
            raise InvalidRequestError(
                f"'{param}' is not supported when several experts answer (routing.top_k={top_k}, or "
                f"aggregation enabled): their answers are merged into one",
                param=param,
                code="unsupported_parameter",
            )


def default_top_k(config: ServiceConfig, experts: int) -> int:
    """Experts asked per routed request when the request does not say. A server setting above the number
    of experts is the operator's mistake, not the client's: clamp it, and say so once at start-up."""
    agg = config.aggregation
    field_name, wanted = (
        ("aggregation.max_experts", agg.max_experts) if agg.enabled else ("router.top_k", config.router.top_k)
    )
    if wanted > experts:
        log.warning("%s is %d but only %d experts are deployed: asking %d", field_name, wanted, experts, experts)
        return experts
    return wanted


class Planner:
    def __init__(
        self,
        config: ServiceConfig,
        cards: list[ExpertCard],
        direct: Mapping[str, object],
        strategies: Mapping[str, RoutingStrategy],
        default_strategy: str,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.cards = cards
        self.direct = direct  # model names answered by one expert, without routing
        self.strategies = strategies
        self.default_strategy = default_strategy
        self.metrics = metrics
        self.top_k = default_top_k(config, len(cards))
        self._batchers: dict[int, MicroBatchingEmbedder] = {}
        # `router.skill_annotator`: set by the service, which owns the backends and residency.
        self.skill_annotator: ServedSkillAnnotator | None = None

    def model_ids(self) -> list[str]:
        return [ROUTED_MODEL_NAME, *(c.id for c in self.cards)]

    def strategy_for(self, name: str | None) -> RoutingStrategy:
        key = name or self.default_strategy
        if key not in self.strategies:
            raise InvalidRequestError(
                f"routing strategy '{key}' is not available in this deployment; available: "
                f"{', '.join(sorted(self.strategies))}",
                param="routing.strategy",
                code="unknown_strategy",
            )
        return self.strategies[key]

    def batcher_for(self, embedder: Embedder) -> MicroBatchingEmbedder:
        key = id(embedder)
        if key not in self._batchers:
            router = self.config.router
            self._batchers[key] = MicroBatchingEmbedder(
                embedder,
                window_s=router.micro_batch_window_ms / 1000,
                max_batch=router.micro_batch_max,
                cache_size=router.embedding_cache_size,
            )
        return self._batchers[key]

    def shared_batcher(self) -> MicroBatchingEmbedder | None:
        """The default strategy's embedder (else any strategy's), for whoever else embeds prompts."""
        for strategy in [self.strategies[self.default_strategy], *self.strategies.values()]:
            if strategy.embedder is not None:
                return self.batcher_for(strategy.embedder)
        return None

    async def plan(self, request: ChatCompletionRequest) -> Plan:
        params = generation_params(request, self.config.server)
        messages = [Message(m.role, m.text()) for m in request.messages]
        request_id = new_completion_id()
        expert_request = ExpertRequest(request_id=request_id, messages=messages, params=params)
        options = request.routing
        if request.model in self.direct:
            if options is not None:
                raise InvalidRequestError(
                    "'routing' only applies to model 'coe'", param="routing", code="invalid_value"
                )
            return Plan(request_id, request.model, None, [request.model], [request.model], expert_request)
        if request.model != ROUTED_MODEL_NAME:
            raise ModelNotFoundError(
                f"The model '{request.model}' does not exist; available: {', '.join(self.model_ids())}",
                param="model",
            )
        router_cfg = self.config.router
        top_k = options.top_k if options and options.top_k is not None else self.top_k
        if top_k > len(self.cards):
            raise InvalidRequestError(
                f"'routing.top_k' is {top_k} but only {len(self.cards)} experts exist",
                param="routing.top_k",
                code="invalid_value",
            )
        check_one_answer(request, top_k)
        strategy = self.strategy_for(options.strategy if options else None)
        cost_weight = options.cost_weight if options and options.cost_weight is not None else None
        query = Query.from_messages(messages, strategy=strategy.name, cost_weight=cost_weight, top_k=top_k)
        annotator = options.annotator if options else None
        if annotator == "llm" and self.skill_annotator is None:
            raise InvalidRequestError(
                "'routing.annotator' is 'llm' but no skill annotator is configured (router.skill_annotator)",
                param="routing.annotator",
                code="invalid_value",
            )
        decision = await self._route(strategy, query, use_llm_skills=annotator != "embedding")
        candidates = list(decision.expert_ids[:1])
        if router_cfg.allow_fallback:
            ranked = sorted(decision.scores, key=lambda i: -decision.scores[i])
            candidates += [i for i in ranked if i not in candidates]
            if router_cfg.default_expert and router_cfg.default_expert not in candidates:
                candidates.append(router_cfg.default_expert)
        plan = Plan(request_id, request.model, decision, candidates, list(decision.expert_ids), expert_request)
        plan.cold_policy = options.cold_start if options else None
        return plan

    async def _route(self, strategy: RoutingStrategy, query: Query, use_llm_skills: bool = True) -> RoutingDecision:
        started = time.perf_counter()
        annotation: dict[str, Any] = {}
        if use_llm_skills and self.skill_annotator is not None and isinstance(strategy, SkillStrategy):
            skills, annotation = await self.skill_annotator.annotate(query.text)
            if skills is not None:
                query = dataclasses.replace(query, skills=skills)
        if strategy.needs_embedding and strategy.embedder is not None:
            # Shared, cached embedding of this prompt alone; scoring after it is sub-millisecond.
            embedding = await self.batcher_for(strategy.embedder).embed(query.text)
            query = dataclasses.replace(query, embedding=embedding)
            if query.skills is None:
                decision = strategy.route(query, self.cards)
            else:  # free-form LLM keywords may need embedding to find their profile skill: off the loop
                decision = await asyncio.to_thread(strategy.route, query, self.cards)
        else:
            decision = await asyncio.to_thread(strategy.route, query, self.cards)
        decision.details.update(annotation)
        self.metrics.routing_latency(strategy.name, time.perf_counter() - started)
        return decision
