"""Mixture-of-Agents style synthesis: an aggregator expert reads the candidates and writes the answer."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from router_service.domain import ExpertDelta, ExpertReply, ExpertRequest, Message
from router_service.experts.errors import deadline_errors, mapped_errors
from router_service.serving.aggregation.base import AggregationResult, Aggregator, Claim, no_claim

if TYPE_CHECKING:
    from router_service.experts.base import ExpertBackend

# From Mixture-of-Agents (Wang et al., 2024), shortened. {responses} is a numbered list; {question} the query.
DEFAULT_TEMPLATE = (
    "You have been provided with a set of responses from various models to the latest user query. "
    "Synthesize these responses into a single, high-quality response. Critically evaluate the information, "
    "recognizing that some of it may be biased or incorrect. Do not simply replicate the given answers; "
    "offer a refined, accurate and comprehensive reply.\n\nResponses from models:\n{responses}\n\n"
    "Query: {question}"
)


def render_prompt(template: str, question: str, replies: Sequence[ExpertReply]) -> str:
    responses = "\n".join(f"{i}. {r.text.strip()}" for i, r in enumerate(replies, start=1))
    return template.format(responses=responses, question=question)


class SynthesizeAggregator(Aggregator):
    method = "synthesize"

    def __init__(
        self, expert_id: str, backend: ExpertBackend, template: str | None = None, timeout_s: float = 60.0
    ) -> None:
        self.expert_id = expert_id
        self.backend = backend
        self.template = template or DEFAULT_TEMPLATE
        self.timeout_s = timeout_s

    def _request(self, request: ExpertRequest, replies: Sequence[ExpertReply]) -> ExpertRequest:
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        prompt = render_prompt(self.template, question, replies)
        history = [m for m in request.messages if m.role == "system"]
        return dataclasses.replace(
            request, request_id=request.request_id + "-synth", messages=history + [Message("user", prompt)]
        )

    def _details(self, replies: Sequence[ExpertReply]) -> dict:
        return {"method": self.method, "aggregator": self.expert_id, "candidates": [r.expert_id for r in replies]}

    async def aggregate(
        self,
        request: ExpertRequest,
        replies: Sequence[ExpertReply],
        scores: Mapping[str, float],
        claim: Claim = no_claim,
    ) -> AggregationResult:
        with mapped_errors(self.expert_id, deadline_errors(self.timeout_s)):
            async with claim(self.expert_id):
                reply = await asyncio.wait_for(self.backend.chat(self._request(request, replies)), self.timeout_s)
        return AggregationResult(
            text=reply.text,
            finish_reason=reply.finish_reason,
            prompt_tokens=reply.prompt_tokens + sum(r.prompt_tokens for r in replies),
            completion_tokens=reply.completion_tokens + sum(r.completion_tokens for r in replies),
            details=self._details(replies),
            extra_experts=[self.expert_id],
        )

    async def stream(
        self,
        request: ExpertRequest,
        replies: Sequence[ExpertReply],
        scores: Mapping[str, float],
        claim: Claim = no_claim,
    ) -> tuple[AggregationResult, AsyncIterator[ExpertDelta]]:
        """The synthesizer's own deltas, with the candidates' tokens added to the last one's totals. The
        synthesizer is held resident (`claim`) from before its first token until the stream is closed."""
        base_prompt = sum(r.prompt_tokens for r in replies)
        base_completion = sum(r.completion_tokens for r in replies)
        held = AsyncExitStack()
        with mapped_errors(self.expert_id, deadline_errors(self.timeout_s)):
            await held.enter_async_context(claim(self.expert_id))
        inner = self.backend.stream(self._request(request, replies))

        async def deltas() -> AsyncIterator[ExpertDelta]:
            try:
                async for delta in inner:
                    if delta.finish_reason:
                        delta = dataclasses.replace(
                            delta,
                            prompt_tokens=delta.prompt_tokens + base_prompt,
                            completion_tokens=delta.completion_tokens + base_completion,
                        )
                    yield delta
            finally:
                await held.aclose()

        result = AggregationResult(
            "", None, base_prompt, base_completion, self._details(replies), extra_experts=[self.expert_id]
        )
        return result, deltas()
