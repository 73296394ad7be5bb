"""Shaping OpenAI responses and the `routing` explanation from what the experts returned."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from router_service.api.schema import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionResponse,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    DeltaMessage,
    TokenLogprobOut,
    TopLogprobOut,
    Usage,
)
from router_service.domain import ExpertCard, ExpertChoice, ExpertDelta, RoutingDecision, TokenLogprob


def routing_info(
    decision: RoutingDecision | None, experts: Sequence[str], cost: float | None = None, **extra: Any
) -> dict[str, Any]:
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


def logprobs_out(logprobs: Sequence[TokenLogprob] | None) -> ChoiceLogprobs | None:
    if logprobs is None:
        return None
    return ChoiceLogprobs(
        content=[
            TokenLogprobOut(
                token=t.token,
                logprob=t.logprob,
                bytes=_bytes(t.bytes),
                top_logprobs=[
                    TopLogprobOut(token=a.token, logprob=a.logprob, bytes=_bytes(a.bytes)) for a in t.top_logprobs
                ],
            )
            for t in logprobs
        ]
    )


def _bytes(value: Sequence[int] | None) -> list[int] | None:
    return None if value is None else list(value)


def completion(
    model: str, choices: Sequence[ExpertChoice], prompt_tokens: int, completion_tokens: int, routing: dict[str, Any]
) -> ChatCompletionResponse:
    return ChatCompletionResponse(
        model=model,
        choices=[
            Choice(
                index=i,
                message=AssistantMessage(content=c.text),
                finish_reason=c.finish_reason,
                logprobs=logprobs_out(c.logprobs),
            )
            for i, c in enumerate(choices)
        ],
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        routing=routing,
    )


async def chunks(
    completion_id: str,
    model: str,
    routing: dict[str, Any],
    first: ExpertDelta | None,
    next_delta,
    include_usage: bool,
    n: int = 1,
    final_routing: Callable[[], dict[str, Any]] | None = None,
) -> AsyncIterator[ChatCompletionChunk]:
    """OpenAI chunk stream: a role chunk (one entry per choice) carrying `routing`, content chunks, and an
    optional usage chunk. With n > 1 the expert's deltas interleave choices; the stream ends when all n
    have finished. `final_routing`, when given, is sent again on the last choice's finishing chunk: what
    is only known at the end (the cost of a streamed synthesis)."""
    created = int(time.time())
    yield ChatCompletionChunk(
        id=completion_id,
        created=created,
        model=model,
        choices=[ChunkChoice(index=i, delta=DeltaMessage(role="assistant", content="")) for i in range(n)],
        routing=routing,
    )
    delta, last = first, None
    finished: set[int] = set()
    while delta is not None:
        last = delta
        closing = bool(delta.finish_reason) and len(finished | {delta.index}) >= n
        if delta.text or delta.finish_reason or delta.logprobs:
            yield ChatCompletionChunk(
                id=completion_id,
                created=created,
                model=model,
                choices=[
                    ChunkChoice(
                        index=delta.index,
                        delta=DeltaMessage(content=delta.text or None),
                        finish_reason=delta.finish_reason,
                        logprobs=logprobs_out(delta.logprobs),
                    )
                ],
                routing=final_routing() if closing and final_routing is not None else None,
            )
        if delta.finish_reason:
            finished.add(delta.index)
            if len(finished) >= n:
                break
        delta = await next_delta()
    if include_usage and last is not None:
        yield ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=model,
            choices=[],
            usage=Usage(
                prompt_tokens=last.prompt_tokens,
                completion_tokens=last.completion_tokens,
                total_tokens=last.prompt_tokens + last.completion_tokens,
            ),
        )
