"""RouterService and the HTTP surface with fake experts: routing, direct calls, streaming, models."""

import json

import pytest

from .helpers import make_client, make_service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def chat(content, **overrides):
    body = {"model": "coe", "messages": [{"role": "user", "content": content}]}
    body.update(overrides)
    return body


async def test_routed_request_goes_to_keyword_expert_and_says_so():
    service, backends = make_service()
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json=chat("please sum these numbers"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert r.headers["x-coe-experts"] == "math"
        assert body["routing"]["experts"] == ["math"]
        assert body["routing"]["strategy"] == "keyword"
        assert body["routing"]["scores"]["math"] > body["routing"]["scores"]["text"]
        assert body["choices"][0]["message"]["content"] == "[math] please sum these numbers"
        assert body["object"] == "chat.completion"
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        assert backends["math"].calls == 1 and backends["text"].calls == 0


async def test_unmatched_prompt_goes_to_generalist():
    service, _ = make_service()
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json=chat("tell me a story"))
        assert r.json()["routing"]["experts"] == ["general"]


async def test_direct_expert_request_bypasses_routing():
    service, backends = make_service()
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json=chat("please sum", model="text"))
        assert r.headers["x-coe-experts"] == "text"
        assert r.json()["routing"]["strategy"] == "direct"
        assert backends["math"].calls == 0


async def test_per_request_strategy():
    service, _ = make_service()
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json=chat("please sum", routing={"strategy": "fixed"}))
        assert r.json()["routing"]["strategy"] == "fixed"
        assert r.json()["routing"]["experts"] == ["general"]


async def test_top_k_asks_every_chosen_expert_and_votes():
    service, backends = make_service()
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json=chat("sum the word", routing={"top_k": 2}))
        routing = r.json()["routing"]
        assert len(routing["chosen"]) == 2
        assert sorted(routing["answered"]) == sorted(routing["chosen"])
        assert routing["aggregation"]["method"] == "vote"
        assert all(backends[e].calls == 1 for e in routing["chosen"])


async def test_stream_is_sse_with_routing_in_first_chunk_and_done():
    service, _ = make_service()
    async with make_client(service) as c:
        r = await c.post(
            "/v1/chat/completions", json=chat("reverse this word", stream=True, stream_options={"include_usage": True})
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-coe-experts"] == "text"
        events = [line[len("data: ") :] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[0]["routing"]["experts"] == ["text"]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == "[text] reverse this word"
        assert any(c["choices"] and c["choices"][0].get("finish_reason") == "stop" for c in chunks)
        assert chunks[-1]["usage"]["completion_tokens"] > 0


async def test_models_and_health():
    service, _ = make_service()
    async with make_client(service) as c:
        models = (await c.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["coe", "math", "text", "general"]
        health = (await c.get("/health")).json()
        assert health["status"] == "ok"
        assert health["experts"] == {e: {"status": "ok", "resident": True} for e in ("math", "text", "general")}


async def test_health_is_degraded_while_discovered_experts_are_refused():
    service, _ = make_service()
    service.refused = {"experts": ["poetry"], "error": "experts[0].num_replicas: must be 1"}
    async with make_client(service) as c:
        health = (await c.get("/health")).json()
    assert health["status"] == "degraded"  # every expert it serves is fine, but one deployed is not served
    assert health["refused"] == service.refused


async def test_bug3_health_reports_each_expert_as_ok_degraded_or_unavailable():
    """Bug 3: /health gave booleans per expert where the README promises statuses."""
    service, _ = make_service(fakes={"text": {"fail": True}})
    async with make_client(service) as c:
        health = (await c.get("/health")).json()
        assert health["status"] == "degraded"
        assert health["experts"]["text"] == {"status": "unavailable", "resident": True}
        assert health["experts"]["math"]["status"] == "ok"
    service, _ = make_service(fakes={e: {"fail": True} for e in ("math", "text", "general")})
    async with make_client(service) as c:
        r = await c.get("/health")
        assert (r.status_code, r.json()["status"]) == (503, "unavailable")


async def test_max_tokens_is_forwarded():
    service, _ = make_service()
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json=chat("one two three four five", model="math", max_tokens=2))
        assert r.json()["choices"][0]["message"]["content"] == "[math] one"
