"""Shaping OpenAI responses and the `routing` explanation from what the experts returned."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Sequence

from router_service.schema import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    Usage,
)
from router_service.types import ExpertCard, ExpertDelta, RoutingDecision


def routing_info(decision: RoutingDecision | None, experts: Sequence[str], cost: float | None = None,
                 **extra: Any) -> dict[str, Any]:
    """`experts` are those whose output the client got; `chosen` those the strategy picked."""
    if decision is None:
        info: dict[str, Any] = {"strategy": "direct", "experts": list(experts), "scores": {}}
    else:
        info = decision.to_dict()
        info["chosen"] = list(decision.expert_ids)
        info["experts"] = list(experts)
    if cost is not None:
        info["cost"] = cost
    info.update({k: v for k, v in extra.items() if v})
    return info


def cost_of(cards: dict[str, ExpertCard], parts: Sequence[tuple[str, int, int]]) -> float:
    return float(sum(cards[e].cost_of(p, c) for e, p, c in parts))


def completion(model: str, text: str, finish_reason: str | None, prompt_tokens: int, completion_tokens: int,
               routing: dict[str, Any]) -> ChatCompletionResponse:
    return ChatCompletionResponse(
        model=model,
        choices=[Choice(message=AssistantMessage(content=text), finish_reason=finish_reason)],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens),
        routing=routing)


async def chunks(completion_id: str, model: str, routing: dict[str, Any], first: ExpertDelta | None,
                 next_delta, include_usage: bool) -> AsyncIterator[ChatCompletionChunk]:
    """OpenAI chunk stream: a role chunk carrying `routing`, content chunks, optional usage chunk."""
    created = int(time.time())
    yield ChatCompletionChunk(id=completion_id, created=created, model=model,
                              choices=[ChunkChoice(delta=DeltaMessage(role="assistant", content=""))],
                              routing=routing)
    delta, last = first, None
    while delta is not None:
        last = delta
        if delta.text or delta.finish_reason:
            yield ChatCompletionChunk(id=completion_id, created=created, model=model,
                                      choices=[ChunkChoice(delta=DeltaMessage(content=delta.text or None),
                                                           finish_reason=delta.finish_reason)])
        if delta.finish_reason:
            break
        delta = await next_delta()
    if include_usage and last is not None:
        yield ChatCompletionChunk(id=completion_id, created=created, model=model, choices=[],
                                  usage=Usage(prompt_tokens=last.prompt_tokens,
                                              completion_tokens=last.completion_tokens,
                                              total_tokens=last.prompt_tokens + last.completion_tokens))
