"""Prometheus metrics through Ray Serve's metrics API (exported on each node's metrics port)."""

from __future__ import annotations

from ray.serve import metrics as serve_metrics

from router_service.serving.metrics import RequestSummary


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
        self._rate_limited = serve_metrics.Counter(
            "coe_rate_limited_total",
            description="Requests refused with 429 because an API key was over a limit.",
            tag_keys=("limit",),
        )
        self._cache = serve_metrics.Counter(
            "coe_cache_lookups_total", description="Semantic cache lookups by result.", tag_keys=("result",)
        )
        self._latency = serve_metrics.Histogram(
            "coe_request_latency_seconds",
            description="Time from request to full answer (streams: to the last chunk), by strategy.",
            boundaries=[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            tag_keys=("strategy",),
        )
        self._cost = serve_metrics.Counter(
            "coe_cost_dollars_total", description="Spend at the configured expert prices.", tag_keys=("expert",)
        )
        self._tokens = serve_metrics.Counter(
            "coe_tokens_total", description="Tokens by kind (prompt, completion).", tag_keys=("kind",)
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

    def rate_limited(self, limit: str) -> None:
        self._rate_limited.inc(tags={"limit": limit})

    def cache(self, hit: bool) -> None:
        self._cache.inc(tags={"result": "hit" if hit else "miss"})

    def completed(self, summary: RequestSummary) -> None:
        self._latency.observe(summary.latency_ms / 1000, tags={"strategy": summary.strategy})
        if summary.cost and summary.experts:
            # Split evenly when several experts answered; the per-expert split is in the request log.
            share = summary.cost / len(summary.experts)
            for expert in summary.experts:
                self._cost.inc(share, tags={"expert": expert})
        if summary.prompt_tokens:
            self._tokens.inc(summary.prompt_tokens, tags={"kind": "prompt"})
        if summary.completion_tokens:
            self._tokens.inc(summary.completion_tokens, tags={"kind": "completion"})
