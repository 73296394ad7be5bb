"""Call several experts at once under a deadline; whoever is late or fails is dropped, with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from router_service.api import shaping
from router_service.domain import ExpertCard, ExpertReply, RoutingDecision
from router_service.errors import CoEError
from router_service.serving.aggregation.base import AggregationResult


@dataclass
class FanoutResult:
    replies: list[ExpertReply]  # in the order of `expert_ids` (best routing score first)
    dropped: list[dict[str, str]] = field(default_factory=list)


async def fan_out(
    expert_ids: Sequence[str], call: Callable[[str], Coroutine[Any, Any, ExpertReply]], deadline_s: float
) -> FanoutResult:
    tasks = {expert_id: asyncio.create_task(call(expert_id)) for expert_id in expert_ids}
    done, pending = await asyncio.wait(tasks.values(), timeout=deadline_s)
    for task in pending:
        task.cancel()  # stop generating answers nobody will read
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    replies, dropped = [], []
    for expert_id, task in tasks.items():
        if task in pending:
            dropped.append(
                {
                    "expert": expert_id,
                    "reason": "deadline",
                    "message": f"no answer within the {deadline_s}s aggregation deadline",
                }
            )
            continue
        exc = task.exception()
        if exc is None:
            replies.append(task.result())
        else:
            dropped.append(dropped_entry(expert_id, exc))
    return FanoutResult(replies, dropped)


def dropped_entry(expert_id: str, exc: BaseException) -> dict[str, str]:
    """How a candidate that failed is reported in `routing.dropped`."""
    if isinstance(exc, CoEError):
        return {"expert": expert_id, "reason": exc.code or exc.error_type, "message": exc.message}
    return {"expert": expert_id, "reason": "error", "message": f"{type(exc).__name__}: {exc}"}


def merged_routing(
    decision: RoutingDecision | None,
    cards_by_id: dict[str, ExpertCard],
    fan: FanoutResult,
    merged: AggregationResult,
    answered: list[str],
) -> dict[str, Any]:
    """`routing` of an answer merged from a fan-out: who answered, who was dropped, and what it cost.
    An aggregator that called experts itself (a synthesizer) reports only the totals, so its own
    tokens are those totals less what the candidates spent."""
    parts = [(r.expert_id, r.prompt_tokens, r.completion_tokens) for r in fan.replies]
    for extra in merged.extra_experts:
        parts.append(
            (
                extra,
                max(merged.prompt_tokens - sum(p for _, p, _ in parts), 0),
                max(merged.completion_tokens - sum(c for _, _, c in parts), 0),
            )
        )
    return shaping.routing_info(
        decision,
        answered,
        shaping.cost_of(cards_by_id, parts),
        answered=[r.expert_id for r in fan.replies],
        dropped=fan.dropped,
        aggregation=merged.details,
    )
