"""Metric hooks the service calls. The core only knows this interface; `deployments/metrics.py` backs it
with Ray Serve's Prometheus metrics, tests with `RecordingMetrics`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol


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
