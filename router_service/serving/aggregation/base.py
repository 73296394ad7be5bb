"""Merging several experts' answers into one. Aggregators see only the replies that arrived in time."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router_service.domain import ExpertDelta, ExpertReply, ExpertRequest

if TYPE_CHECKING:
    from router_service.config.service import AggregationConfig
    from router_service.experts.base import ExpertBackend


@dataclass
class AggregationResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    details: dict[str, Any] = field(default_factory=dict)
    # Experts whose calls this aggregation made (e.g. the synthesizer), beyond the candidates.
    extra_experts: list[str] = field(default_factory=list)


# Holds an expert resident while an aggregator calls it (the service passes `ResidencyManager.use`).
Claim = Callable[[str], AbstractAsyncContextManager[None]]


def no_claim(expert_id: str) -> AbstractAsyncContextManager[None]:
    return nullcontext()


class Aggregator(abc.ABC):
    method: str = "base"

    @abc.abstractmethod
    async def aggregate(
        self,
        request: ExpertRequest,
        replies: Sequence[ExpertReply],
        scores: Mapping[str, float],
        claim: Claim = no_claim,
    ) -> AggregationResult:
        """Merge `replies` (best routing score first) into one answer. An expert the aggregator calls
        itself is called inside `claim(expert_id)`, so a memory budget loads it first and counts it."""

    async def stream(
        self,
        request: ExpertRequest,
        replies: Sequence[ExpertReply],
        scores: Mapping[str, float],
        claim: Claim = no_claim,
    ) -> tuple[AggregationResult, AsyncIterator[ExpertDelta]]:
        """Default: aggregate, then emit the result as one delta."""
        result = await self.aggregate(request, replies, scores, claim)

        async def single() -> AsyncIterator[ExpertDelta]:
            yield ExpertDelta(
                result.text, result.finish_reason or "stop", result.prompt_tokens, result.completion_tokens
            )

        return result, single()


def make_aggregator(config: AggregationConfig, backends: Mapping[str, ExpertBackend], timeout_s: float) -> Aggregator:
    if config.method == "vote":
        from router_service.serving.aggregation.vote import VoteAggregator

        return VoteAggregator()
    from router_service.serving.aggregation.synthesize import SynthesizeAggregator

    assert config.aggregator is not None  # enforced by config validation
    return SynthesizeAggregator(config.aggregator, backends[config.aggregator], config.template, timeout_s=timeout_s)
