"""The semantic cache: exact and near-duplicate hits, misses below the threshold, never across API keys,
bounded by entries and time to live; hits replayed as a response and as an SSE stream."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from router_service.api.app import create_app
from router_service.config.gateway import GatewayConfig
from router_service.domain import ExpertChoice
from router_service.gateway.semantic_cache import CachedAnswer, SemanticCache
from router_service.routing.embedding import HashingEmbedder
from router_service.serving.metrics import RecordingMetrics
from tests.unit.helpers import config_dict

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def answer(text: str = "42") -> CachedAnswer:
    return CachedAnswer((ExpertChoice(text),), 3, 1, ("math",), "chatcmpl-x")


# -- the store -------------------------------------------------------------------------------------
def test_exact_repeat_hits_even_without_vectors():
    cache = SemanticCache(threshold=0.9)
    cache.put("p", "What is 2+2?", None, answer())
    hit = cache.lookup("p", "What is 2+2?", None)
    assert hit is not None and hit.similarity == 1.0 and hit.answer.choices[0].text == "42"


def test_near_duplicate_hits_above_the_threshold_and_misses_below():
    cache = SemanticCache(threshold=0.95)
    cache.put("p", "a", unit(1, 0), answer())
    close = unit(1, 0.2)  # cosine 0.981
    far = unit(1, 0.5)  # cosine 0.894
    assert cache.lookup("p", "b", close).similarity == pytest.approx(0.9806, abs=1e-4)
    assert cache.lookup("p", "c", far) is None


def test_partitions_never_mix():
    cache = SemanticCache(threshold=0.5)
    cache.put("tenant-a", "same", unit(1, 0), answer())
    assert cache.lookup("tenant-b", "same", unit(1, 0)) is None


def test_bounded_by_entries_least_recently_used_first():
    cache = SemanticCache(threshold=1.0, max_entries=2)
    cache.put("p", "one", None, answer("1"))
    cache.put("p", "two", None, answer("2"))
    assert cache.lookup("p", "one", None) is not None  # "two" is now the least recently used
    cache.put("p", "three", None, answer("3"))
    assert len(cache) == 2
    assert cache.lookup("p", "two", None) is None
    assert cache.lookup("p", "one", None) is not None and cache.lookup("p", "three", None) is not None


def test_entries_expire_after_their_time_to_live():
    now = [0.0]
    cache = SemanticCache(threshold=1.0, ttl_s=10, clock=lambda: now[0])
    cache.put("p", "q", None, answer())
    now[0] = 9.9
    assert cache.lookup("p", "q", None) is not None
    now[0] = 10.1
    assert cache.lookup("p", "q", None) is None
    assert len(cache) == 0


def test_partition_key_depends_on_every_part():
    base = {"caller": "a", "experts": ("math",), "params": (16, 0.0)}
    key = SemanticCache.partition_key(**base)
    assert key == SemanticCache.partition_key(**dict(reversed(list(base.items()))))
    for name, other in (("caller", "b"), ("experts", ("text",)), ("params", (16, 0.7))):
        assert SemanticCache.partition_key(**{**base, name: other}) != key


# -- on the request path ---------------------------------------------------------------------------
KEYS = {"team-a": "sk-team-a-0123456789", "team-b": "sk-team-b-0123456789"}


def cached_app(threshold: float = 0.95, **router: Any):
    from router_service.config.service import parse_service_config
    from router_service.experts.fake import FakeExpertBackend
    from router_service.serving.assembly import build_service

    args = config_dict(**router)
    args["gateway"] = {
        "store": "memory://",
        "cache": {"enabled": True, "similarity_threshold": threshold},
        "keys": [{"name": name, "key": key} for name, key in KEYS.items()],
    }
    config = parse_service_config(args)
    backends = {e.id: FakeExpertBackend(e.id) for e in config.experts}
    metrics = RecordingMetrics()
    service = build_service(config, backends, embedder_factory=lambda name: HashingEmbedder(), metrics=metrics)
    app = create_app(lambda: service, config.server, metrics, gateway=GatewayConfig.model_validate(args["gateway"]))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return client, backends, metrics


def ask(text: str, **extra: Any) -> dict:
    return {"model": "coe", "messages": [{"role": "user", "content": text}], "temperature": 0, **extra}


def auth(name: str = "team-a") -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[name]}"}


def calls(backends) -> int:
    return sum(b.calls for b in backends.values())


def streamed(text: str) -> tuple[str, dict]:
    """The content and the first chunk's routing of an SSE body."""
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return content, chunks[0]["routing"]


async def test_a_repeat_is_answered_from_the_cache_with_the_same_content():
    client, backends, metrics = cached_app()
    async with client:
        first = await client.post("/v1/chat/completions", json=ask("What is the sum of 2 and 3?"), headers=auth())
        again = await client.post("/v1/chat/completions", json=ask("What is the sum of 2 and 3?"), headers=auth())
    assert first.json()["routing"]["cache"] == "miss"
    hit = again.json()
    assert hit["routing"]["cache"] == "hit" and hit["routing"]["cost"] == 0.0
    assert hit["routing"]["cached_from"] == first.json()["id"]
    assert hit["choices"] == first.json()["choices"]
    assert calls(backends) == 1
    assert metrics.counts[("cache", "hit")] == 1 and metrics.counts[("cache", "miss")] == 1


async def test_a_streamed_request_hits_and_is_replayed_as_sse():
    client, backends, _ = cached_app()
    question = ask("What is the sum of 2 and 3?", stream=True)
    async with client:
        first = await client.post("/v1/chat/completions", json=question, headers=auth())
        again = await client.post("/v1/chat/completions", json=question, headers=auth())
        plain = await client.post("/v1/chat/completions", json=ask("What is the sum of 2 and 3?"), headers=auth())
    (text1, routing1), (text2, routing2) = streamed(first.text), streamed(again.text)
    assert routing1["cache"] == "miss" and routing2["cache"] == "hit"
    assert text2 == text1 and text1.startswith("[math]")
    assert again.text.rstrip().endswith("data: [DONE]")
    # A streamed answer is stored whole: the same question without streaming hits it too.
    assert plain.json()["routing"]["cache"] == "hit" and plain.json()["choices"][0]["message"]["content"] == text1
    assert calls(backends) == 1


async def test_no_hit_across_api_keys():
    client, backends, _ = cached_app()
    async with client:
        await client.post("/v1/chat/completions", json=ask("What is the sum of 2 and 3?"), headers=auth("team-a"))
        other = await client.post(
            "/v1/chat/completions", json=ask("What is the sum of 2 and 3?"), headers=auth("team-b")
        )
    assert other.json()["routing"]["cache"] == "miss"
    assert calls(backends) == 2


async def test_a_near_duplicate_above_the_threshold_hits_and_one_below_misses():
    first, near = "What is the sum of 2 and 3?", "what is the sum of 2 and 3"
    vectors = HashingEmbedder().encode([first, near])
    similarity = float(vectors[0] @ vectors[1])
    assert 0.5 < similarity < 1.0  # near, not identical, under the embedder the cache uses
    for threshold, expected in ((similarity - 0.01, "hit"), (min(similarity + 0.01, 1.0), "miss")):
        client, _, _ = cached_app(threshold=threshold)
        async with client:
            await client.post("/v1/chat/completions", json=ask(first), headers=auth())
            second = await client.post("/v1/chat/completions", json=ask(near), headers=auth())
        assert second.json()["routing"]["cache"] == expected, threshold


async def test_different_generation_parameters_do_not_share_answers():
    client, backends, _ = cached_app()
    async with client:
        await client.post("/v1/chat/completions", json=ask("What is the sum of 2 and 3?"), headers=auth())
        other = await client.post(
            "/v1/chat/completions", json=ask("What is the sum of 2 and 3?", max_tokens=5), headers=auth()
        )
    assert other.json()["routing"]["cache"] == "miss"
    assert calls(backends) == 2


async def test_a_fallback_answer_is_not_cached():
    from router_service.config.service import parse_service_config
    from router_service.experts.fake import FakeExpertBackend
    from router_service.serving.assembly import build_service

    args = config_dict()
    args["gateway"] = {"store": "memory://", "cache": {"enabled": True}}
    config = parse_service_config(args)
    backends = {e.id: FakeExpertBackend(e.id, fail=e.id == "math") for e in config.experts}
    service = build_service(config, backends, embedder_factory=lambda name: HashingEmbedder())
    app = create_app(lambda: service, config.server, gateway=config.gateway)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for _ in range(2):
            answer = await client.post("/v1/chat/completions", json=ask("What is the sum of 2 and 3?"))
            assert answer.json()["routing"]["cache"] == "miss"
    assert backends["math"].calls == 2  # tried first both times
    assert backends["text"].calls + backends["general"].calls == 2  # the fallback answered both times
