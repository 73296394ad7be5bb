"""Micro-batched embeddings give every request the decision it would get routed alone (correctness, not timing)."""

import asyncio

import numpy as np
import pytest

from router_service.domain import Query
from router_service.routing.embedding import HashingEmbedder
from router_service.routing.embedding_batcher import EmbeddingCache, MicroBatchingEmbedder
from router_service.routing.strategies.base import RoutingStrategy
from router_service.serving.service import RouterService

from .helpers import make_service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class CountingEmbedder(HashingEmbedder):
    def __init__(self):
        super().__init__(dim=64)
        self.calls = []

    def encode(self, texts):
        self.calls.append(len(texts))
        return super().encode(texts)


class NearestSkill(RoutingStrategy):
    """Scores experts by similarity of the prompt to their skill words — an embedding strategy for tests."""

    name = "nearest_skill"
    needs_embedding = True

    def score_experts(self, query, experts):
        vector = self.embed([query])[0]
        return {e.id: float(np.max(self.embedder.encode(list(e.skills) or [e.id]) @ vector)) for e in experts}


PROMPTS = [f"please {verb} item {i}" for i, verb in enumerate(["sum", "reverse", "add", "spell", "tell"] * 8)]


async def test_concurrent_decisions_equal_routing_alone():
    service, _ = make_service(micro_batch_window_ms=20)
    embedder = CountingEmbedder()
    strategy = NearestSkill().set_embedder(embedder)
    service = RouterService(
        service.config,
        service.backends,
        {**service.strategies, "nearest_skill": strategy},
        default_strategy="nearest_skill",
    )
    alone = [strategy.route(Query(p, top_k=1), service.cards) for p in PROMPTS]
    embedder.calls.clear()

    from router_service.api.schema import ChatCompletionRequest

    requests = [ChatCompletionRequest(model="coe", messages=[{"role": "user", "content": p}]) for p in PROMPTS]
    plans = await asyncio.gather(*(service.planner.plan(r) for r in requests))
    assert [p.decision.expert_ids for p in plans] == [d.expert_ids for d in alone]
    for plan, single in zip(plans, alone):
        assert plan.decision.scores == pytest.approx(single.scores, abs=1e-5)
    batcher = next(iter(service.planner._batchers.values()))
    assert batcher.batches < len(PROMPTS)  # prompts really shared encode calls
    assert batcher.cache.hits == 0


async def test_batcher_returns_each_texts_own_embedding_and_caches():
    embedder = CountingEmbedder()
    batcher = MicroBatchingEmbedder(embedder, window_s=0.01, max_batch=8, cache_size=100)
    texts = [f"text {i}" for i in range(20)]
    vectors = await asyncio.gather(*(batcher.embed(t) for t in texts))
    expected = HashingEmbedder(dim=64).encode(texts)
    assert np.allclose(np.vstack(vectors), expected)
    assert max(embedder.calls) <= 8 and sum(embedder.calls) == 20
    again = await batcher.embed("text 3")
    assert np.allclose(again, expected[3]) and batcher.cache.hits == 1 and sum(embedder.calls) == 20


async def test_cache_can_be_switched_off_and_is_bounded():
    assert EmbeddingCache(0).get("x") is None
    cache = EmbeddingCache(2)
    for t in "abc":
        cache.put(t, np.ones(1))
    assert cache.get("a") is None and cache.get("c") is not None
