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


class GatedEmbedder(CountingEmbedder):
    """Holds each encode call until the test opens the gate, so 'busy' is a state, not a duration."""

    def __init__(self):
        super().__init__()
        import threading

        self.gate = threading.Event()

    def encode(self, texts):
        self.gate.wait(timeout=30)
        return super().encode(texts)


async def test_lone_request_is_encoded_at_once_without_a_window():
    embedder = CountingEmbedder()
    batcher = MicroBatchingEmbedder(embedder, cache_size=0)  # default: no window
    assert batcher.window_s == 0
    vector = await batcher.embed("alone")
    assert embedder.calls == [1]
    assert np.allclose(vector, HashingEmbedder(dim=64).encode(["alone"])[0])


async def test_requests_arriving_while_busy_share_the_next_call():
    embedder = GatedEmbedder()
    batcher = MicroBatchingEmbedder(embedder, max_batch=64, cache_size=0)
    first = asyncio.ensure_future(batcher.embed("first"))
    await asyncio.sleep(0)  # the first call starts and blocks inside encode
    while batcher._running == 0:
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.embed(f"later {i}")) for i in range(19)]
    await asyncio.sleep(0)
    assert embedder.calls == [] and len(batcher._pending) == 19  # queued behind the busy call
    embedder.gate.set()
    vectors = await asyncio.wait_for(asyncio.gather(first, *later), timeout=30)  # a lost queue fails, not hangs
    assert embedder.calls == [1, 19]
    expected = HashingEmbedder(dim=64).encode(["first"] + [f"later {i}" for i in range(19)])
    assert np.allclose(np.vstack(vectors), expected)
    assert batcher._running == 0 and not batcher._pending


async def test_a_full_queue_starts_its_own_call_while_another_runs():
    embedder = GatedEmbedder()
    batcher = MicroBatchingEmbedder(embedder, max_batch=4, cache_size=0)
    tasks = [asyncio.ensure_future(batcher.embed(f"t{i}")) for i in range(9)]
    await asyncio.sleep(0)
    embedder.gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    assert max(embedder.calls) <= 4 and sum(embedder.calls) == 9


async def test_a_failing_encode_fails_its_batch_and_the_queue_moves_on():
    class FailsOnce(CountingEmbedder):
        def encode(self, texts):
            if not self.calls:
                self.calls.append(len(texts))
                raise RuntimeError("boom")
            return super().encode(texts)

    batcher = MicroBatchingEmbedder(FailsOnce(), cache_size=0)
    with pytest.raises(RuntimeError, match="boom"):
        await batcher.embed("x")
    assert batcher._running == 0
    vector = await batcher.embed("y")
    assert vector.shape == (64,)
