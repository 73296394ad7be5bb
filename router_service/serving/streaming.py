"""Streaming one answer: open the first candidate that produces a first piece, hold its residency claim
until the stream ends, and turn its deltas into OpenAI chunks.

Waiting for the first piece before answering means a failure before any output is still an HTTP error
(and the next candidate is tried); after that, failures are reported in-band by the HTTP layer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from router_service.api import shaping
from router_service.api.schema import ChatCompletionChunk
from router_service.domain import ExpertDelta
from router_service.errors import CoEError
from router_service.serving.calls import RETRYABLE, ExpertCaller, close_quietly, final_error
from router_service.serving.planning import Plan


@dataclass
class StreamUsage:
    """What a stream has delivered so far: token totals (the last delta carries the running totals), the
    text of each choice, and its price once it has ended. Per-key token and spend limits charge what it
    used; the semantic cache stores what it said."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    ended: bool = False
    keep_text: bool = False  # only the semantic cache needs what was said
    texts: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)

    def see(self, delta: ExpertDelta | None) -> ExpertDelta | None:
        if delta is not None:
            self.prompt_tokens = max(self.prompt_tokens, delta.prompt_tokens)
            self.completion_tokens = max(self.completion_tokens, delta.completion_tokens)
            if delta.text and self.keep_text:
                self.texts.setdefault(delta.index, []).append(delta.text)
            if delta.finish_reason:
                self.finish[delta.index] = delta.finish_reason
        return delta

    def watching(self, next_delta: Callable[[], Awaitable[ExpertDelta | None]]):
        async def watched() -> ExpertDelta | None:
            return self.see(await next_delta())

        return watched


@dataclass
class StreamOutcome:
    experts: list[str]
    chunks: AsyncIterator[ChatCompletionChunk]
    usage: StreamUsage = field(default_factory=StreamUsage)


class HeldStream:
    """An expert's delta iterator together with what it holds (its residency claim); `aclose` frees both."""

    def __init__(self, deltas: AsyncIterator[ExpertDelta], resources: AsyncExitStack) -> None:
        self.deltas = deltas
        self.resources = resources

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> ExpertDelta:
        return await self.deltas.__anext__()

    async def aclose(self) -> None:
        await self.resources.aclose()


async def next_or_none(deltas: AsyncIterator[ExpertDelta]) -> ExpertDelta | None:
    try:
        return await deltas.__anext__()
    except StopAsyncIteration:
        return None


async def open_stream(caller: ExpertCaller, plan: Plan) -> tuple[str, ExpertDelta | None, HeldStream]:
    """The first candidate that streams a first piece (or ends cleanly), with that piece."""
    last_error: CoEError | None = None
    for expert_id in plan.candidates:
        resources = AsyncExitStack()
        try:
            # Held until the stream is closed, so the expert is not evicted mid-answer.
            await resources.enter_async_context(caller.residency.use(expert_id, plan.record))
            deltas = caller.backends[expert_id].stream(plan.expert_request).__aiter__()
            resources.push_async_callback(close_quietly, deltas)  # cancels generation nobody reads
            held = HeldStream(deltas, resources)
            # The first piece may wait for a replica to start (a cold expert): its own deadline then.
            first = await caller.next_delta(expert_id, held, plan.deadlines.get(expert_id))
            return expert_id, first, held
        except BaseException as exc:
            await resources.aclose()
            if not isinstance(exc, RETRYABLE):
                raise
            last_error = exc
            caller.note_failure(plan, expert_id, exc)
    raise final_error(plan, last_error)


async def chunks(
    plan: Plan,
    routing: dict,
    first: ExpertDelta | None,
    stream: AsyncIterator[ExpertDelta],
    next_delta: Callable[[], Awaitable[ExpertDelta | None]],
    on_end: Callable[[int], None],
    final_routing: Callable[[], dict] | None = None,
) -> AsyncIterator[ChatCompletionChunk]:
    """OpenAI chunks of one answer; the stream is closed however it ends, and `on_end` gets the status."""
    status = 200
    try:
        async for chunk in shaping.chunks(
            plan.request_id,
            plan.model,
            routing,
            first,
            next_delta,
            plan.include_usage,
            plan.expert_request.params.n,
            final_routing,
        ):
            yield chunk
    except BaseException:
        status = 499  # client went away or the expert failed mid-stream
        raise
    finally:
        await close_quietly(stream)  # cancels the expert's generation when the client disconnects
        on_end(status)
