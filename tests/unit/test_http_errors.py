"""Every client mistake is a 4xx with an OpenAI error body, over the real FastAPI app (no Ray)."""

import asyncio
import json

import pytest

from .helpers import assert_openai_error, make_client, make_service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def client():
    service, backends = make_service(fakes={"text": {"fail": True}, "general": {"delay_s": 0.0}})
    async with make_client(service) as c:
        yield c


def chat(**overrides):
    body = {"model": "coe", "messages": [{"role": "user", "content": "add 2 sum 3"}]}
    body.update(overrides)
    return body


async def test_malformed_json(client):
    r = await client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(r, 400)


async def test_wrong_type(client):
    r = await client.post("/v1/chat/completions", json=chat(temperature="hot"))
    assert_openai_error(r, 400, param="temperature")


async def test_missing_messages(client):
    r = await client.post("/v1/chat/completions", json={"model": "coe"})
    assert_openai_error(r, 400, param="messages")


async def test_empty_message_list(client):
    r = await client.post("/v1/chat/completions", json=chat(messages=[]))
    assert_openai_error(r, 400, param="messages")


async def test_bad_role(client):
    r = await client.post("/v1/chat/completions", json=chat(messages=[{"role": "wizard", "content": "x"}]))
    error = assert_openai_error(r, 400)
    assert error["param"].startswith("messages[0]")


async def test_unknown_model_is_404(client):
    r = await client.post("/v1/chat/completions", json=chat(model="gpt-17"))
    error = assert_openai_error(r, 404, param="model")
    assert error["code"] == "model_not_found"


async def test_body_too_large_is_413(client):
    r = await client.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "x" * 5000}]))
    assert_openai_error(r, 413)


async def test_body_too_large_without_content_length_is_413(client):
    async def body():
        for _ in range(10):
            yield b"x" * 1000

    r = await client.post("/v1/chat/completions", content=body(), headers={"content-type": "application/json"})
    assert_openai_error(r, 413)


async def test_max_tokens_out_of_range(client):
    assert_openai_error(await client.post("/v1/chat/completions", json=chat(max_tokens=0)), 400, "max_tokens")
    assert_openai_error(await client.post("/v1/chat/completions", json=chat(max_tokens=65)), 400, "max_tokens")
    assert_openai_error(await client.post("/v1/chat/completions", json=chat(max_tokens=-3)), 400, "max_tokens")


async def test_prompt_too_long_is_400(client):
    r = await client.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "y" * 600}]))
    error = assert_openai_error(r, 400, param="messages")
    assert error["code"] == "context_length_exceeded"


async def test_bad_routing_options_name_the_field(client):
    r = await client.post("/v1/chat/completions", json=chat(routing={"cost_weight": 3}))
    assert_openai_error(r, 400, param="routing.cost_weight")
    r = await client.post("/v1/chat/completions", json=chat(routing={"top_k": 9}))
    assert_openai_error(r, 400, param="routing.top_k")
    r = await client.post("/v1/chat/completions", json=chat(routing={"strategy": "nope"}))
    assert_openai_error(r, 400, param="routing.strategy")
    r = await client.post("/v1/chat/completions", json=chat(routing={"colour": "red"}))
    assert_openai_error(r, 400, param="routing.colour")


async def test_unknown_route_and_method(client):
    assert_openai_error(await client.get("/v1/nothing"), 404)
    assert_openai_error(await client.get("/v1/chat/completions"), 405)


async def test_failing_expert_without_fallback_is_502_and_service_stays_up(client):
    r = await client.post("/v1/chat/completions", json=chat(model="text"))
    error = assert_openai_error(r, 502)
    assert error["code"] == "expert_failed"
    ok = await client.post("/v1/chat/completions", json=chat(model="math"))
    assert ok.status_code == 200


async def test_timeout_is_504():
    service, _ = make_service(fakes={"math": {"delay_s": 5}})
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json=chat(model="math"))
        error = assert_openai_error(r, 504)
        assert error["code"] == "expert_timeout"


async def test_routed_request_falls_back_when_chosen_expert_fails():
    service, backends = make_service(fakes={"math": {"fail": True}})
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json=chat())
        assert r.status_code == 200, r.text
        body = r.json()
        answered = body["routing"]["experts"][0]
        assert answered != "math"
        assert r.headers["x-coe-experts"] == answered
        assert body["routing"]["fallback"][0]["expert"] == "math"


async def test_all_experts_failing_is_503():
    service, _ = make_service(fakes={e: {"fail": True} for e in ("math", "text", "general")})
    async with make_client(service) as c:
        assert_openai_error(await c.post("/v1/chat/completions", json=chat()), 503)


async def test_stream_of_failing_expert_is_an_http_error(client):
    r = await client.post("/v1/chat/completions", json=chat(model="text", stream=True))
    assert_openai_error(r, 502)


async def test_concurrent_bad_and_good_requests(client):
    bad = [
        client.post("/v1/chat/completions", content=b"[", headers={"content-type": "application/json"})
        for _ in range(10)
    ]
    good = [client.post("/v1/chat/completions", json=chat()) for _ in range(10)]
    results = await asyncio.gather(*bad, *good)
    assert [r.status_code for r in results] == [400] * 10 + [200] * 10
    assert all(json.loads(r.text)["choices"][0]["message"]["content"] for r in results[10:])
