"""Prometheus metrics through Ray Serve's metrics API (exported on each node's metrics port)."""

from __future__ import annotations

from ray.serve import metrics as serve_metrics


class RayServeMetrics:
    def __init__(self) -> None:
        self._requests = serve_metrics.Counter(
            "coe_requests_total",
            description="Requests answered, by expert and HTTP status.",
            tag_keys=("expert", "status"),  # type: ignore[arg-type]  # Ray annotates Tuple[str] for any length
        )
        self._routing = serve_metrics.Histogram(
            "coe_routing_decision_seconds",
            description="Time to make a routing decision.",
            boundaries=[0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0],
            tag_keys=("strategy",),
        )
        self._fallbacks = serve_metrics.Counter(
            "coe_fallbacks_total",
            description="Expert failures that moved a request to another expert.",
            tag_keys=("expert", "reason"),  # type: ignore[arg-type]
        )
        self._errors = serve_metrics.Counter(
            "coe_errors_total", description="Error responses by OpenAI error type.", tag_keys=("type",)
        )
        self._rejected = serve_metrics.Counter(
            "coe_rejected_total", description="Requests refused with 429 because the router was at capacity."
        )

    def request(self, expert: str, status: int) -> None:
        self._requests.inc(tags={"expert": expert, "status": str(status)})

    def routing_latency(self, strategy: str, seconds: float) -> None:
        self._routing.observe(seconds, tags={"strategy": strategy})

    def fallback(self, expert: str, reason: str) -> None:
        self._fallbacks.inc(tags={"expert": expert, "reason": reason})

    def error(self, error_type: str) -> None:
        self._errors.inc(tags={"type": error_type})

    def rejected(self) -> None:
        self._rejected.inc()
