"""The semantic cache on the request path: when a plan may be answered from the cache, and how a
cached answer is replayed (as a response, or as an SSE stream).

A plan is cacheable when one expert answers it or a fixed set does (aggregation), and it asks for no
logprobs (a replayed stream has no per-token logprobs to give). Only answers from the expert the
router chose are stored: a fallback answer is a degraded one and should not outlive the fault.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from router_service.config.gateway import CacheConfig
from router_service.domain import ExpertChoice, ExpertDelta, Query
from router_service.gateway.semantic_cache import CachedAnswer, CacheHit, SemanticCache
from router_service.routing.embedding_batcher import MicroBatchingEmbedder
from router_service.serving.metrics import Metrics
from router_service.serving.planning import Plan


@dataclass(frozen=True)
class Probe:
    partition: str
    text: str
    vector: np.ndarray | None
    experts: tuple[str, ...]  # the experts the answer must come from to be stored


class AnswerCache:
    def __init__(
        self,
        config: CacheConfig,
        embedder: Callable[[], MicroBatchingEmbedder | None],
        metrics: Metrics,
    ) -> None:
        self.cache = SemanticCache(config.similarity_threshold, config.max_entries, config.ttl_s)
        # The same embedder (and its prompt cache) for every entry, so cosines compare like with like.
        self.embedder = embedder
        self.metrics = metrics

    async def probe(self, plan: Plan) -> Probe | None:
        params = plan.expert_request.params
        if params.logprobs:
            return None
        experts = tuple(plan.aggregate_over) if len(plan.aggregate_over) > 1 else tuple(plan.candidates[:1])
        messages = plan.expert_request.messages
        text = Query.from_messages(messages).text
        # Everything but the wording of the last user turn must match exactly.
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=len(messages) - 1)
        context = tuple((m.role, m.content) for i, m in enumerate(messages) if i != last_user)
        partition = SemanticCache.partition_key(
            caller=plan.caller,
            model=plan.model,
            experts=experts,
            params=dataclasses.astuple(params),
            context=context,
        )
        batcher = self.embedder()
        vector = await batcher.embed(text) if batcher is not None else None
        return Probe(partition, text, vector, experts)

    def lookup(self, probe: Probe) -> CacheHit | None:
        hit = self.cache.lookup(probe.partition, probe.text, probe.vector)
        self.metrics.cache(hit is not None)
        return hit

    def store(
        self,
        probe: Probe,
        answered_by: Sequence[str],
        choices: Sequence[ExpertChoice],
        prompt_tokens: int,
        completion_tokens: int,
        request_id: str,
    ) -> None:
        if not set(probe.experts) <= set(answered_by):
            return  # a fallback answered, or a candidate was dropped: not the answer this key stands for
        answer = CachedAnswer(tuple(choices), prompt_tokens, completion_tokens, tuple(answered_by), request_id)
        self.cache.put(probe.partition, probe.text, probe.vector, answer)


async def replay(answer: CachedAnswer) -> AsyncIterator[ExpertDelta]:
    """A cached answer as the deltas of a stream: each choice's whole text in one piece."""
    for index, choice in enumerate(answer.choices):
        yield ExpertDelta(
            text=choice.text,
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            index=index,
        )


def collected_choices(texts: dict[int, list[str]], finish: dict[int, str | None], n: int) -> list[ExpertChoice]:
    return [ExpertChoice("".join(texts.get(i, [])), finish.get(i) or "stop") for i in range(n)]
