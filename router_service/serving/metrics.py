"""Metric hooks the service calls. The core only knows this interface; `deployments/metrics.py` backs it
with Ray Serve's Prometheus metrics, tests with `RecordingMetrics`."""

from __future__ import annotations

from collections import Counter
from typing import Protocol


class Metrics(Protocol):
    def request(self, expert: str, status: int) -> None: ...

    def routing_latency(self, strategy: str, seconds: float) -> None: ...

    def fallback(self, expert: str, reason: str) -> None: ...

    def error(self, error_type: str) -> None: ...

    def rejected(self) -> None: ...


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


class RecordingMetrics:
    """Counts every hook call; for tests and for quick local inspection."""

    def __init__(self) -> None:
        self.counts: Counter[tuple] = Counter()
        self.latencies: list[float] = []

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
