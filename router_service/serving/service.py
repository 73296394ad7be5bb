"""RouterService, the facade of the request path: plan → call expert(s) → aggregate → shape. No Ray.

The service owns request-level policy (limits, fallbacks, deadlines, aggregation, residency, batches);
strategies own the choice; backends own generation. Each step lives in its own module: `planning`,
`calls`, `streaming`, `batch`; this one ties them together and answers health and model listings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router_service.api import shaping
from router_service.api.schema import ChatCompletionRequest, ChatCompletionResponse, ModelCard, ModelList
from router_service.config.service import ROUTED_MODEL_NAME, ServiceConfig
from router_service.domain import ExpertCard, ExpertChoice, RoutingDecision
from router_service.errors import InvalidRequestError
from router_service.experts.base import ExpertBackend
from router_service.routing.strategies.base import RoutingStrategy
from router_service.serving.aggregation import AggregationResult, make_aggregator
from router_service.serving.batch import BatchItem, run_batch
from router_service.serving.calls import ExpertCaller
from router_service.serving.fanout import FanoutResult
from router_service.serving.metrics import Metrics, NullMetrics
from router_service.serving.planning import Plan, Planner
from router_service.serving.residency import ResidencyManager
from router_service.serving.streaming import StreamOutcome, chunks, open_stream

log = logging.getLogger("coe.router")


def cards_from_config(config: ServiceConfig) -> list[ExpertCard]:
    return [
        ExpertCard(
            id=e.id,
            skills=tuple(e.skills),
            input_cost_per_mtok=e.cost.input_per_mtok,
            output_cost_per_mtok=e.cost.output_per_mtok,
            generalist=e.generalist,
            description=e.description,
        )
        for e in config.experts
    ]


@dataclass
class ChatOutcome:
    response: ChatCompletionResponse
    experts: list[str]


class RouterService:
    def __init__(
        self,
        config: ServiceConfig,
        backends: Mapping[str, ExpertBackend],
        strategies: Mapping[str, RoutingStrategy],
        default_strategy: str | None = None,
        metrics: Metrics | None = None,
        residency: ResidencyManager | None = None,
    ) -> None:
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
        self.residency = residency or ResidencyManager(
            self.backends, config.residency.max_resident_experts, config.residency.load_window_s
        )
        self.planner = Planner(config, self.cards, self.backends, self.strategies, self.default_strategy, self.metrics)
        timeouts = {e.id: e.timeout_s for e in config.experts}
        self.caller = ExpertCaller(self.backends, timeouts, self.residency, self.metrics)
        agg = config.aggregation
        timeout = timeouts[agg.aggregator] if agg.aggregator else config.server.request_timeout_s
        self.aggregator = make_aggregator(agg, self.backends, timeout)
        # Router settings naming an expert that is not deployed (split deployment): field → expert id.
        self.unresolved: dict[str, str] = {}

    # -- public API ---------------------------------------------------------------------------
    def models(self) -> ModelList:
        data = [ModelCard(id=ROUTED_MODEL_NAME, description="Routed composition of experts")]
        data += [ModelCard(id=c.id, description=c.description or None) for c in self.cards]
        return ModelList(data=data)

    async def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The router's status and each expert's: `ok`, or `unavailable` when its health check fails or
        times out. An expert offloaded on purpose is `ok` (`resident: false`): it loads when needed.
        Overall: `ok`, `degraded` while some expert is down or a setting names a missing expert, and
        `unavailable` when no expert is up."""

        async def check(expert_id: str, backend: ExpertBackend) -> dict[str, Any]:
            resident = self.residency.is_resident(expert_id)
            if not resident:
                return {"status": "ok", "resident": False}
            try:
                healthy = bool(await asyncio.wait_for(backend.health(), timeout=timeout_s))
            except Exception:
                healthy = False
            return {"status": "ok" if healthy else "unavailable", "resident": True}

        results = await asyncio.gather(*(check(e, b) for e, b in self.backends.items()))
        experts = dict(zip(self.backends, results))
        up = [r["status"] == "ok" for r in results]
        status = "ok" if all(up) else ("degraded" if any(up) else "unavailable")
        if status == "ok" and self.unresolved:
            status = "degraded"
        report: dict[str, Any] = {"status": status, "experts": experts, "strategy": self.default_strategy}
        if self.unresolved:
            report["unresolved"] = self.unresolved
        if self.residency.enabled:
            report["resident"] = self.residency.resident_ids()
            report["residency"] = {k: v for k, v in self.residency.stats.snapshot().items() if k != "load_log"}
        return report

    async def decide(self, request: ChatCompletionRequest) -> RoutingDecision | None:
        """The routing decision the service would make for `request` (None for a direct expert call)."""
        return (await self.planner.plan(request)).decision

    async def chat(self, request: ChatCompletionRequest) -> ChatOutcome:
        return await self.execute(await self.planner.plan(request))

    async def stream(self, request: ChatCompletionRequest) -> StreamOutcome:
        """Route and wait for the first piece, so failures before any output are still HTTP errors."""
        plan = await self.planner.plan(request)
        plan.include_usage = bool(request.stream_options and request.stream_options.include_usage)
        if len(plan.aggregate_over) > 1:
            return await self._stream_aggregated(plan)
        expert_id, first, held = await open_stream(self.caller, plan)
        routing = shaping.routing_info(plan.decision, [expert_id])
        return StreamOutcome(
            [expert_id],
            chunks(
                plan,
                routing,
                first,
                held,
                lambda: self.caller.next_delta(expert_id, held),
                lambda status: self._log(plan, [expert_id], status),
            ),
        )

    async def batch(self, items: Sequence[BatchItem]) -> dict[str, Any]:
        """Answer many chat requests: route all, group by assigned expert, run group by group."""
        limit = self.config.server.max_batch_items
        if len(items) > limit:
            raise InvalidRequestError(
                f"a batch holds at most {limit} requests, got {len(items)}", param="requests", code="batch_too_large"
            )
        return await run_batch(items, self.planner.plan, self.execute, self.residency.resident_ids)

    # -- execution ----------------------------------------------------------------------------
    async def execute(self, plan: Plan) -> ChatOutcome:
        if len(plan.aggregate_over) > 1:
            return await self._execute_aggregated(plan)
        reply = await self.caller.call_with_fallback(plan)
        cost = shaping.cost_of(self.cards_by_id, [(reply.expert_id, reply.prompt_tokens, reply.completion_tokens)])
        response = shaping.completion(
            plan.model,
            reply.choices,
            reply.prompt_tokens,
            reply.completion_tokens,
            shaping.routing_info(plan.decision, [reply.expert_id], cost),
        )
        self._log(plan, [reply.expert_id], 200)
        return ChatOutcome(response, [reply.expert_id])

    def _aggregate_routing(
        self, plan: Plan, fan: FanoutResult, agg_result: AggregationResult, answered: list[str]
    ) -> dict[str, Any]:
        parts = [(r.expert_id, r.prompt_tokens, r.completion_tokens) for r in fan.replies]
        for extra in agg_result.extra_experts:
            parts.append(
                (
                    extra,
                    max(agg_result.prompt_tokens - sum(p for _, p, _ in parts), 0),
                    max(agg_result.completion_tokens - sum(c for _, _, c in parts), 0),
                )
            )
        return shaping.routing_info(
            plan.decision,
            answered,
            shaping.cost_of(self.cards_by_id, parts),
            answered=[r.expert_id for r in fan.replies],
            dropped=fan.dropped,
            aggregation=agg_result.details,
        )

    async def _execute_aggregated(self, plan: Plan) -> ChatOutcome:
        fan = await self.caller.gather(plan, self.config.aggregation.deadline_s)
        scores = plan.decision.scores if plan.decision else {}
        result = await self.aggregator.aggregate(plan.expert_request, fan.replies, scores)
        answered = [r.expert_id for r in fan.replies] + result.extra_experts
        routing = self._aggregate_routing(plan, fan, result, answered)
        response = shaping.completion(
            plan.model,
            [ExpertChoice(result.text, result.finish_reason)],
            result.prompt_tokens,
            result.completion_tokens,
            routing,
        )
        self._log(plan, answered, 200)
        return ChatOutcome(response, answered)

    async def _stream_aggregated(self, plan: Plan) -> StreamOutcome:
        fan = await self.caller.gather(plan, self.config.aggregation.deadline_s)
        scores = plan.decision.scores if plan.decision else {}
        result, deltas = await self.aggregator.stream(plan.expert_request, fan.replies, scores)
        answered = [r.expert_id for r in fan.replies] + result.extra_experts
        iterator = deltas.__aiter__()
        source = result.extra_experts[0] if result.extra_experts else answered[0]
        first = await self.caller.next_delta(source, iterator)
        routing = self._aggregate_routing(plan, fan, result, answered)
        return StreamOutcome(
            answered,
            chunks(
                plan,
                routing,
                first,
                iterator,
                lambda: self.caller.next_delta(source, iterator),
                lambda status: self._log(plan, answered, status),
            ),
        )

    def _log(self, plan: Plan, experts: Sequence[str], status: int) -> None:
        for expert in experts:
            self.metrics.request(expert, status)
        log.info(
            json.dumps(
                {
                    "event": "request",
                    "request_id": plan.request_id,
                    "strategy": plan.decision.strategy if plan.decision else "direct",
                    "experts": list(experts),
                    "status": status,
                    "latency_ms": round((time.perf_counter() - plan.started) * 1000, 1),
                }
            )
        )
