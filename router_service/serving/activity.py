"""What one router replica has seen lately, for /dashboard: a `Metrics` sink kept in memory.

Prometheus (`deployments/metrics.py`) has the fleet-wide, long-term view; this log answers "what is
this replica doing right now" without a Prometheus server: the last `max_recent` requests with their
routing decisions, and counters since the replica started. `TeeMetrics` feeds both from the same hooks.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from router_service.serving.metrics import Metrics, RequestSummary

PERCENTILES = (50, 90, 99)
TOP_SCORES = 5  # per decision in the snapshot: enough to see the runner-up, small enough to poll often


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentiles(values: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = {f"p{q}": _rounded(percentile(values, q)) for q in PERCENTILES}
    out["count"] = len(values)
    return out


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class _Entry:
    at: float  # wall-clock seconds, when the request finished
    summary: RequestSummary


class ActivityLog:
    """Every `Metrics` hook, recorded in memory: bounded recent windows plus running counters.

    Hooks may be called from worker threads (the service runs some work off the event loop), so
    every update and the snapshot hold one lock; each is a few dictionary operations.
    """

    def __init__(self, max_recent: int = 500, clock: Callable[[], float] = time.time) -> None:
        self.max_recent = max_recent
        self._clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self._recent: deque[_Entry] = deque(maxlen=max_recent)
        self._routing_ms: deque[float] = deque(maxlen=max_recent)
        self._requests: dict[str, Counter[int]] = {}
        self._strategies: Counter[str] = Counter()
        self._fallbacks: Counter[tuple[str, str]] = Counter()
        self._errors: Counter[str] = Counter()
        self._rate_limited: Counter[str] = Counter()
        self._rejected = 0
        self._cache: Counter[str] = Counter()
        self._cost_total = 0.0
        self._cost_by_expert: defaultdict[str, float] = defaultdict(float)
        self._tokens: Counter[str] = Counter()
        self._completed = 0
        self._with_fallback = 0

    # -- Metrics hooks ------------------------------------------------------------------------
    def request(self, expert: str, status: int) -> None:
        with self._lock:
            self._requests.setdefault(expert, Counter())[status] += 1

    def routing_latency(self, strategy: str, seconds: float) -> None:
        with self._lock:
            self._routing_ms.append(seconds * 1000)

    def fallback(self, expert: str, reason: str) -> None:
        with self._lock:
            self._fallbacks[(expert, reason)] += 1

    def error(self, error_type: str) -> None:
        with self._lock:
            self._errors[error_type] += 1

    def rejected(self) -> None:
        with self._lock:
            self._rejected += 1

    def rate_limited(self, limit: str) -> None:
        with self._lock:
            self._rate_limited[limit] += 1

    def cache(self, hit: bool) -> None:
        with self._lock:
            self._cache["hit" if hit else "miss"] += 1

    def completed(self, summary: RequestSummary) -> None:
        with self._lock:
            self._recent.append(_Entry(self._clock(), summary))
            self._completed += 1
            self._strategies[summary.strategy] += 1
            self._with_fallback += int(summary.fallback)
            self._cost_total += summary.cost or 0.0
            if summary.cost and summary.experts:
                # Split evenly when several experts answered, as coe_cost_dollars_total does.
                share = summary.cost / len(summary.experts)
                for expert in summary.experts:
                    self._cost_by_expert[expert] += share
            self._tokens["prompt"] += summary.prompt_tokens
            self._tokens["completion"] += summary.completion_tokens

    # -- the dashboard's view -----------------------------------------------------------------
    def snapshot(self, recent: int = 50) -> dict[str, Any]:
        """JSON-able state: counters since start, percentiles over the recent window, and the newest
        `recent` decisions (newest first)."""
        with self._lock:
            entries = list(self._recent)
            routing_ms = list(self._routing_ms)
            hits, misses = self._cache["hit"], self._cache["miss"]
            lookups = hits + misses
            rate_limited = dict(self._rate_limited)
            return {
                "started": self.started,
                "now": self._clock(),
                "window": {"requests": len(entries), "max": self.max_recent},
                "requests": {
                    "completed": self._completed,
                    "by_strategy": dict(self._strategies),
                    "by_expert": {
                        expert: {"total": sum(statuses.values()), "by_status": _keyed(statuses)}
                        for expert, statuses in sorted(self._requests.items())
                    },
                },
                "latency_ms": percentiles([e.summary.latency_ms for e in entries]),
                "routing_ms": percentiles(routing_ms),
                "cost": {
                    "total_usd": self._cost_total,
                    "by_expert": dict(sorted(self._cost_by_expert.items())),
                },
                "tokens": {"prompt": self._tokens["prompt"], "completion": self._tokens["completion"]},
                "fallbacks": {
                    "total": sum(self._fallbacks.values()),
                    "requests": self._with_fallback,
                    "by_expert": [
                        {"expert": expert, "reason": reason, "count": count}
                        for (expert, reason), count in sorted(self._fallbacks.items())
                    ],
                },
                "throttled": {
                    "total": sum(rate_limited.values()) + self._rejected,
                    "rate_limited": rate_limited,
                    "capacity": self._rejected,
                },
                "cache": {"hits": hits, "misses": misses, "hit_rate": hits / lookups if lookups else None},
                "errors": dict(sorted(self._errors.items())),
                "recent": [_decision(e) for e in reversed(entries[-recent:] if recent > 0 else [])],
            }


def _keyed(counts: Counter[int]) -> dict[str, int]:
    """HTTP statuses as JSON object keys (strings), in numeric order."""
    return {str(status): count for status, count in sorted(counts.items())}


def _decision(entry: _Entry) -> dict[str, Any]:
    s = entry.summary
    top = sorted(s.scores.items(), key=lambda item: item[1], reverse=True)[:TOP_SCORES]
    return {
        "time": entry.at,
        "request_id": s.request_id,
        "strategy": s.strategy,
        "chosen": list(s.chosen),
        "experts": list(s.experts),
        "scores": [[expert, round(float(score), 6)] for expert, score in top],
        "status": s.status,
        "latency_ms": s.latency_ms,
        "cost": s.cost,
        "tokens": s.prompt_tokens + s.completion_tokens,
        "cache": s.cache,
        "fallback": s.fallback,
        "stream": s.stream,
        "key": s.key_name,
    }


class TeeMetrics:
    """Forwards every hook to each sink in order (e.g. Prometheus and the dashboard's ActivityLog)."""

    def __init__(self, *sinks: Metrics) -> None:
        self.sinks = sinks

    def request(self, expert: str, status: int) -> None:
        for sink in self.sinks:
            sink.request(expert, status)

    def routing_latency(self, strategy: str, seconds: float) -> None:
        for sink in self.sinks:
            sink.routing_latency(strategy, seconds)

    def fallback(self, expert: str, reason: str) -> None:
        for sink in self.sinks:
            sink.fallback(expert, reason)

    def error(self, error_type: str) -> None:
        for sink in self.sinks:
            sink.error(error_type)

    def rejected(self) -> None:
        for sink in self.sinks:
            sink.rejected()

    def rate_limited(self, limit: str) -> None:
        for sink in self.sinks:
            sink.rate_limited(limit)

    def cache(self, hit: bool) -> None:
        for sink in self.sinks:
            sink.cache(hit)

    def completed(self, summary: RequestSummary) -> None:
        for sink in self.sinks:
            sink.completed(summary)
