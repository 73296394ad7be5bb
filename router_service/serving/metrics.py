"""Metric hooks the service calls, and the one JSON log line per request. The core only knows the
`Metrics` interface; `deployments/metrics.py` backs it with Ray Serve's Prometheus metrics, tests with
`RecordingMetrics`."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from router_service.serving.planning import Plan

log = logging.getLogger("coe.router")


@dataclass(frozen=True)
class RequestSummary:
    """One finished chat request, as the dashboard and the request log see it."""

    request_id: str
    strategy: str  # "direct" when the client named an expert
    experts: tuple[str, ...]  # whose output the client got
    chosen: tuple[str, ...]  # what the strategy picked (empty for direct calls)
    scores: dict[str, float] = field(default_factory=dict)
    status: int = 200
    latency_ms: float = 0.0
    cost: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache: str | None = None  # "hit" when answered from the semantic cache
    fallback: bool = False  # an expert failed and another one answered
    stream: bool = False
    key_name: str | None = None  # the API key's configured name, never the key


class Metrics(Protocol):
    def request(self, expert: str, status: int) -> None: ...

    def routing_latency(self, strategy: str, seconds: float) -> None: ...

    def fallback(self, expert: str, reason: str) -> None: ...

    def error(self, error_type: str) -> None: ...

    def rejected(self) -> None: ...

    def rate_limited(self, limit: str) -> None:
        """A key went over `limit` (requests, tokens or budget) and got 429."""
        ...

    def cache(self, hit: bool) -> None: ...

    def completed(self, summary: RequestSummary) -> None: ...


class NullMetrics:
    def request(self, expert: str, status: int) -> None:
        pass

    def routing_latency(self, strategy: str, seconds: float) -> None:
        pass

    def fallback(self, expert: str, reason: str) -> None:
        pass

    def error(self, error_type: str) -> None:
        pass

    def rejected(self) -> None:
        pass

    def rate_limited(self, limit: str) -> None:
        pass

    def cache(self, hit: bool) -> None:
        pass

    def completed(self, summary: RequestSummary) -> None:
        pass


class RecordingMetrics(NullMetrics):
    """Counts every hook call; for tests and for quick local inspection."""

    def __init__(self) -> None:
        self.counts: Counter[tuple] = Counter()
        self.latencies: list[float] = []
        self.summaries: list[RequestSummary] = []

    def request(self, expert: str, status: int) -> None:
        self.counts[("request", expert, status)] += 1

    def routing_latency(self, strategy: str, seconds: float) -> None:
        self.latencies.append(seconds)

    def fallback(self, expert: str, reason: str) -> None:
        self.counts[("fallback", expert, reason)] += 1

    def error(self, error_type: str) -> None:
        self.counts[("error", error_type)] += 1

    def rejected(self) -> None:
        self.counts[("rejected",)] += 1

    def rate_limited(self, limit: str) -> None:
        self.counts[("rate_limited", limit)] += 1

    def cache(self, hit: bool) -> None:
        self.counts[("cache", "hit" if hit else "miss")] += 1

    def completed(self, summary: RequestSummary) -> None:
        self.summaries.append(summary)


def log_request(
    metrics: Metrics,
    plan: Plan,
    experts: Sequence[str],
    status: int,
    *,
    cost: float | None = None,
    usage: Any = None,
    stream: bool = False,
    cache: str | None = None,
) -> None:
    """Count the request for every expert that ran and for the request as a whole, and log it as one
    JSON line (ids, strategy, status and latency; never the prompt)."""
    if cache != "hit":  # a cached answer called no expert
        for expert in experts:
            metrics.request(expert, status)
    decision = plan.decision
    summary = RequestSummary(
        request_id=plan.request_id,
        strategy=decision.strategy if decision else "direct",
        experts=tuple(experts),
        chosen=tuple(decision.expert_ids) if decision else (),
        scores=dict(decision.scores) if decision else {},
        status=status,
        latency_ms=round((time.perf_counter() - plan.started) * 1000, 1),
        cost=cost,
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        cache=cache,
        fallback=bool(decision and decision.fallback),
        stream=stream,
        key_name=plan.caller,
    )
    metrics.completed(summary)
    log.info(
        json.dumps(
            {
                "event": "request",
                "request_id": summary.request_id,
                "strategy": summary.strategy,
                "experts": list(experts),
                "status": status,
                "latency_ms": summary.latency_ms,
                "key": summary.key_name,
            }
        )
    )
