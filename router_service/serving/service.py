"""RouterService, the facade of the request path: plan → call expert(s) → aggregate → shape. No Ray.

The service owns request-level policy (limits, fallbacks, deadlines, aggregation, residency, batches);
strategies own the choice; backends own generation. Each step lives in its own module: `planning`,
`calls`, `streaming`, `batch`; this one ties them together and answers health and model listings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router_service.api import shaping
from router_service.api.schema import ChatCompletionRequest, ChatCompletionResponse, ModelCard, ModelList
from router_service.config.service import ROUTED_MODEL_NAME, ServiceConfig
from router_service.domain import ExpertCard, ExpertChoice, RoutingDecision
from router_service.errors import InvalidRequestError
from router_service.experts.base import ExpertBackend
from router_service.gateway.semantic_cache import CacheHit
from router_service.routing.embedding import Embedder
from router_service.routing.embedding_batcher import MicroBatchingEmbedder
from router_service.routing.strategies.base import RoutingStrategy
from router_service.serving.aggregation import make_aggregator
from router_service.serving.batch import BatchItem, BatchSteps, run_batch
from router_service.serving.caching import AnswerCache, Probe, collected_choices, replay
from router_service.serving.calls import ExpertCaller
from router_service.serving.cold_start import ColdStarts
from router_service.serving.fanout import FanoutResult, merged_routing
from router_service.serving.metrics import Metrics, NullMetrics, log_request
from router_service.serving.planning import Plan, Planner
from router_service.serving.residency import Residency, ResidencyManager
from router_service.serving.skill_annotation import ServedSkillAnnotator
from router_service.serving.streaming import StreamOutcome, StreamUsage, chunks, next_or_none, open_stream

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
    cache_hit: bool = False

    @property
    def charged_tokens(self) -> int:
        """Tokens an expert spent on this answer: none when it came from the semantic cache."""
        return 0 if self.cache_hit or self.response.usage is None else self.response.usage.total_tokens


class RouterService:
    def __init__(
        self,
        config: ServiceConfig,
        backends: Mapping[str, ExpertBackend],
        strategies: Mapping[str, RoutingStrategy],
        default_strategy: str | None = None,
        metrics: Metrics | None = None,
        residency: Residency | None = None,
        cache_embedder: Embedder | None = None,
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
        self.residency: Residency = residency or ResidencyManager(
            self.backends,
            config.residency.max_resident_experts,
            config.residency.load_window_s,
            wait_timeout_s=config.residency.wait_timeout_s,
            switch_timeout_s=config.residency.switch_timeout_s,
        )
        self.planner = Planner(config, self.cards, self.backends, self.strategies, self.default_strategy, self.metrics)
        annotator = config.router.skill_annotator
        if annotator is not None:
            self.planner.skill_annotator = ServedSkillAnnotator(
                annotator, self.backends[annotator.expert], self.residency
            )
        timeouts = {e.id: e.timeout_s for e in config.experts}
        self.caller = ExpertCaller(self.backends, timeouts, self.residency, self.metrics)
        agg = config.aggregation
        timeout = timeouts[agg.aggregator] if agg.aggregator else config.server.request_timeout_s
        self.aggregator = make_aggregator(agg, self.backends, timeout)
        cache = config.gateway.cache
        self.answers = None
        if cache.enabled:
            # A strategy's embedder when there is one (its prompt cache is then shared), else the
            # router's configured embedder; without either, only exact repeats hit.
            def cache_batcher() -> MicroBatchingEmbedder | None:
                shared = self.planner.shared_batcher()
                if shared is None and cache_embedder is not None:
                    shared = self.planner.batcher_for(cache_embedder)
                return shared

            self.answers = AnswerCache(cache, cache_batcher, self.metrics)
        self.cold_starts = ColdStarts(config.router, self.backends, timeouts)
        # Router settings naming an expert that is not deployed (split deployment): field → expert id.
        self.unresolved: dict[str, str] = {}
        # Expert applications discovered since, that these settings cannot serve (split deployment):
        # {"experts": [...], "error": why}. This service keeps the set it was built for.
        self.refused: dict[str, Any] | None = None

    @property
    def cold(self) -> set[str]:
        """Experts at zero replicas (autoscaled to zero), kept current by the router's discovery."""
        return self.cold_starts.cold

    @cold.setter
    def cold(self, expert_ids: set[str]) -> None:
        self.cold_starts.cold = set(expert_ids)

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
            if expert_id in self.cold:  # scaled to zero on purpose; asking it would start a replica
                return {"status": "ok", "cold": True}
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
        if status == "ok" and (self.unresolved or self.refused):
            status = "degraded"
        report: dict[str, Any] = {"status": status, "experts": experts, "strategy": self.default_strategy}
        if self.unresolved:
            report["unresolved"] = self.unresolved
        if self.refused:
            report["refused"] = self.refused
        unrouted = self.unrouted()
        if unrouted:
            report["unrouted"] = unrouted
        if self.residency.enabled:
            try:  # the application's numbers (the coordinator's, under a shared budget)
                await asyncio.wait_for(self.residency.refresh(), timeout_s)
            except Exception:
                report["residency_stale"] = True
            report["resident"] = self.residency.resident_ids()
            report["residency"] = self.residency.totals()
        return report

    def unrouted(self) -> dict[str, list[str]]:
        """Deployed experts a fitted strategy never picks, because it was fitted without them (an expert
        added since): strategy → expert ids. They stay reachable directly and through other strategies."""
        gaps = {}
        for name, strategy in self.strategies.items():
            fitted = strategy.fitted_experts
            if fitted is not None:
                missing = [e for e in self.config.expert_ids if e not in fitted]
                if missing:
                    gaps[name] = missing
        return gaps

    async def decide(self, request: ChatCompletionRequest) -> RoutingDecision | None:
        """The routing decision the service would make for `request` (None for a direct expert call)."""
        return (await self.planner.plan(request)).decision

    async def chat(self, request: ChatCompletionRequest, caller: str | None = None) -> ChatOutcome:
        """`caller` is the API key's configured name (never the key): the request log's, and the
        semantic cache's tenant."""
        plan = await self.planner.plan(request)
        plan.caller = caller
        probe = await self.answers.probe(plan) if self.answers else None
        if probe is not None and self.answers is not None:
            hit = self.answers.lookup(probe)
            if hit is not None:
                return self._answer_from_cache(plan, hit)
        outcome = await self.execute(plan)
        if probe is not None and self.answers is not None:
            response = outcome.response
            choices = [ExpertChoice(c.message.content or "", c.finish_reason) for c in response.choices]
            usage = response.usage
            self.answers.store(
                probe,
                outcome.experts,
                choices,
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
                response.id,
            )
            if response.routing is not None:
                response.routing["cache"] = "miss"
        return outcome

    def _answer_from_cache(self, plan: Plan, hit: CacheHit) -> ChatOutcome:
        answer = hit.answer
        routing = self._cached_routing(plan, hit)
        response = shaping.completion(
            plan.model, list(answer.choices), answer.prompt_tokens, answer.completion_tokens, routing
        )
        log_request(self.metrics, plan, answer.experts, 200, cost=0.0, cache="hit")
        return ChatOutcome(response, list(answer.experts), cache_hit=True)

    def _cached_routing(self, plan: Plan, hit: CacheHit) -> dict[str, Any]:
        # No expert ran: nothing was spent. `cached_from` names the request whose answer this is.
        return shaping.routing_info(
            plan.decision,
            list(hit.answer.experts),
            0.0,
            cache="hit",
            cache_similarity=round(hit.similarity, 4),
            cached_from=hit.answer.request_id,
        )

    async def _stream_from_cache(self, plan: Plan, hit: CacheHit) -> StreamOutcome:
        deltas = replay(hit.answer).__aiter__()
        first = await next_or_none(deltas)
        usage = StreamUsage(cost=0.0)  # nothing to charge: no expert ran

        def ended(status: int) -> None:
            usage.ended = True
            log_request(self.metrics, plan, hit.answer.experts, status, cost=0.0, stream=True, cache="hit")

        routing = self._cached_routing(plan, hit)
        return StreamOutcome(
            list(hit.answer.experts),
            chunks(plan, routing, first, deltas, lambda: next_or_none(deltas), ended),
            usage,
        )

    async def stream(self, request: ChatCompletionRequest, caller: str | None = None) -> StreamOutcome:
        """Route and wait for the first piece, so failures before any output are still HTTP errors."""
        plan = await self.planner.plan(request)
        plan.caller = caller
        plan.include_usage = bool(request.stream_options and request.stream_options.include_usage)
        probe = await self.answers.probe(plan) if self.answers else None
        if probe is not None and self.answers is not None:
            hit = self.answers.lookup(probe)
            if hit is not None:
                return await self._stream_from_cache(plan, hit)
        if len(plan.aggregate_over) > 1:
            return await self._stream_aggregated(plan, probe)
        self.cold_starts.apply(plan)
        expert_id, first, held = await open_stream(self.caller, plan)
        routing = shaping.routing_info(
            plan.decision, [expert_id], cache="miss" if probe else None, cold_start=plan.cold_start
        )
        usage = StreamUsage(keep_text=probe is not None)
        usage.see(first)

        def ended(status: int) -> None:
            usage.cost = shaping.cost_of(self.cards_by_id, [(expert_id, usage.prompt_tokens, usage.completion_tokens)])
            usage.ended = True
            self._store_streamed(probe, [expert_id], usage, plan, status)
            log_request(self.metrics, plan, [expert_id], status, cost=usage.cost, usage=usage, stream=True)

        return StreamOutcome(
            [expert_id],
            chunks(
                plan,
                routing,
                first,
                held,
                usage.watching(lambda: self.caller.next_delta(expert_id, held)),
                ended,
            ),
            usage,
        )

    async def batch(self, items: Sequence[BatchItem]) -> dict[str, Any]:
        """Answer many chat requests: route all, group by assigned expert, run group by group."""
        limit = self.config.server.max_batch_items
        if len(items) > limit:
            raise InvalidRequestError(
                f"a batch holds at most {limit} requests, got {len(items)}", param="requests", code="batch_too_large"
            )
        agg = self.config.aggregation
        try:  # the batch runs resident experts first: ask what they are now
            await asyncio.wait_for(self.residency.refresh(), 10.0)
        except Exception:  # only the order suffers from a stale view; each call still takes its lease
            log.warning("could not refresh what is resident; ordering the batch by the last known state")
        steps = BatchSteps(
            plan=self.planner.plan,
            execute=self.execute,
            call=self.caller.call,
            finish=self._finish_batch_aggregated,
            resident=self.residency.resident_ids,
            synthesizer=agg.aggregator if agg.method == "synthesize" else None,
        )
        return await run_batch(items, steps)

    # -- execution ----------------------------------------------------------------------------
    async def execute(self, plan: Plan) -> ChatOutcome:
        if len(plan.aggregate_over) > 1:
            return await self._execute_aggregated(plan)
        self.cold_starts.apply(plan)
        reply = await self.caller.call_with_fallback(plan)
        cost = shaping.cost_of(self.cards_by_id, [(reply.expert_id, reply.prompt_tokens, reply.completion_tokens)])
        response = shaping.completion(
            plan.model,
            reply.choices,
            reply.prompt_tokens,
            reply.completion_tokens,
            shaping.routing_info(plan.decision, [reply.expert_id], cost, cold_start=plan.cold_start),
        )
        log_request(self.metrics, plan, [reply.expert_id], 200, cost=cost, usage=reply)
        return ChatOutcome(response, [reply.expert_id])

    async def _execute_aggregated(self, plan: Plan) -> ChatOutcome:
        return await self._finish_aggregated(plan, await self.caller.gather(plan, self.config.aggregation.deadline_s))

    async def _finish_batch_aggregated(self, plan: Plan, fan: FanoutResult) -> ChatOutcome:
        """A batch called the candidates phase by phase; merge as the single-request path does."""
        return await self._finish_aggregated(plan, self.caller.settled(fan))

    async def _finish_aggregated(self, plan: Plan, fan: FanoutResult) -> ChatOutcome:
        scores = plan.decision.scores if plan.decision else {}
        result = await self.aggregator.aggregate(plan.expert_request, fan.replies, scores, self._claim(plan))
        answered = [r.expert_id for r in fan.replies] + result.extra_experts
        routing = merged_routing(plan.decision, self.cards_by_id, fan, result, answered)
        response = shaping.completion(
            plan.model,
            [ExpertChoice(result.text, result.finish_reason)],
            result.prompt_tokens,
            result.completion_tokens,
            routing,
        )
        log_request(self.metrics, plan, answered, 200, cost=routing.get("cost"), usage=response.usage)
        return ChatOutcome(response, answered)

    def _claim(self, plan: Plan):
        """What an aggregator holds an expert it calls itself with: its residency claim, counted in the
        batch's own record when there is one."""
        return lambda expert_id: self.residency.use(expert_id, plan.record)

    def _store_streamed(
        self, probe: Probe | None, answered_by: list[str], usage: StreamUsage, plan: Plan, status: int
    ) -> None:
        if probe is None or self.answers is None or status != 200:
            return  # a stream cut short is not an answer to keep
        n = plan.expert_request.params.n
        choices = collected_choices(usage.texts, usage.finish, n)
        self.answers.store(probe, answered_by, choices, usage.prompt_tokens, usage.completion_tokens, plan.request_id)

    async def _stream_aggregated(self, plan: Plan, probe: Probe | None = None) -> StreamOutcome:
        fan = await self.caller.gather(plan, self.config.aggregation.deadline_s)
        scores = plan.decision.scores if plan.decision else {}
        result, deltas = await self.aggregator.stream(plan.expert_request, fan.replies, scores, self._claim(plan))
        answered = [r.expert_id for r in fan.replies] + result.extra_experts
        iterator = deltas.__aiter__()
        source = result.extra_experts[0] if result.extra_experts else answered[0]
        first = await self.caller.next_delta(source, iterator)
        routing = merged_routing(plan.decision, self.cards_by_id, fan, result, answered)
        if probe is not None:
            routing["cache"] = "miss"
        # The candidates' tokens are known now; the streamed source's own are counted as they arrive.
        usage = StreamUsage(keep_text=probe is not None)
        fixed = [(r.expert_id, r.prompt_tokens, r.completion_tokens) for r in fan.replies]
        usage.see(first)

        def parts() -> list[tuple[str, int, int]]:
            if not result.extra_experts:
                return fixed
            # The synthesizer's last delta carries the candidates' tokens too.
            own_prompt = max(usage.prompt_tokens - result.prompt_tokens, 0)
            own_completion = max(usage.completion_tokens - result.completion_tokens, 0)
            return fixed + [(source, own_prompt, own_completion)]

        def final_routing() -> dict[str, Any]:
            return {**routing, "cost": shaping.cost_of(self.cards_by_id, parts())}

        def ended(status: int) -> None:
            spent = parts()
            usage.cost = shaping.cost_of(self.cards_by_id, spent)
            usage.prompt_tokens = sum(p for _, p, _ in spent)
            usage.completion_tokens = sum(c for _, _, c in spent)
            usage.ended = True
            self._store_streamed(probe, [r.expert_id for r in fan.replies], usage, plan, status)
            log_request(self.metrics, plan, answered, status, cost=usage.cost, usage=usage, stream=True)

        return StreamOutcome(
            answered,
            chunks(
                plan,
                routing,
                first,
                iterator,
                usage.watching(lambda: self.caller.next_delta(source, iterator)),
                ended,
                final_routing if result.extra_experts else None,
            ),
            usage,
        )
