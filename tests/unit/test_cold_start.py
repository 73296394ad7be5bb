"""What a request does when its chosen expert is scaled to zero: wait (with the cold-start deadline)
or fall back to a warm expert and wake the cold one; by config or per request; `routing` says which."""

from __future__ import annotations

import pytest

from router_service.api.schema import ChatCompletionRequest
from router_service.config.service import parse_service_config
from router_service.errors import ConfigError
from tests.unit.helpers import make_client, make_service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def ask(text: str = "What is the sum of 2 and 3?", **routing) -> dict:
    body = {"model": "coe", "messages": [{"role": "user", "content": text}]}
    return body | ({"routing": routing} if routing else {})


async def test_fallback_answers_from_a_warm_expert_and_wakes_the_cold_one():
    service, backends = make_service(cold_start="fallback")
    service.cold = {"math"}
    async with make_client(service) as c:
        body = (await c.post("/v1/chat/completions", json=ask())).json()
    cold = body["routing"]["cold_start"]
    assert cold["expert"] == "math" and cold["action"] == "fallback"
    assert body["routing"]["experts"] == [cold["answered_by"]] and cold["answered_by"] != "math"
    task = service.cold_starts._wakes["math"]
    await task
    assert backends["math"].calls == 0  # woken by a health call, not by answering


async def test_wait_is_the_default_and_lifts_the_call_deadline():
    service, backends = make_service()
    service.cold = {"math"}
    async with make_client(service) as c:
        body = (await c.post("/v1/chat/completions", json=ask())).json()
    assert body["routing"]["experts"] == ["math"]
    assert body["routing"]["cold_start"] == {"expert": "math", "action": "waited"}
    plan = await service.planner.plan(ChatCompletionRequest.model_validate(ask()))
    service.cold_starts.apply(plan)
    assert plan.deadlines["math"] == service.config.router.cold_start_wait_s


async def test_the_request_overrides_the_configured_policy():
    service, _ = make_service(cold_start="wait")
    service.cold = {"math"}
    async with make_client(service) as c:
        body = (await c.post("/v1/chat/completions", json=ask(cold_start="fallback"))).json()
        streamed = await c.post("/v1/chat/completions", json=ask(cold_start="fallback") | {"stream": True})
    assert body["routing"]["cold_start"]["action"] == "fallback"
    assert '"action":"fallback"' in streamed.text.replace(" ", "")


async def test_a_warm_expert_has_no_cold_start_note_and_health_never_calls_a_cold_one():
    service, backends = make_service()
    service.cold = {"text"}
    async with make_client(service) as c:
        body = (await c.post("/v1/chat/completions", json=ask())).json()
        health = (await c.get("/health")).json()
    assert "cold_start" not in body["routing"]
    assert health["status"] == "ok" and health["experts"]["text"] == {"status": "ok", "cold": True}


def test_autoscaling_is_one_way_to_size_an_expert_and_not_with_a_memory_budget():
    from tests.unit.helpers import config_dict

    args = config_dict()
    args["experts"][1] |= {"autoscaling_config": {"min_replicas": 0, "max_replicas": 1}, "num_replicas": 2}
    with pytest.raises(ConfigError, match=r"num_replicas: not with autoscaling_config"):
        parse_service_config(args)
    del args["experts"][1]["num_replicas"]
    parse_service_config(args)
    args["residency"] = {"max_resident_experts": 1}
    with pytest.raises(ConfigError, match=r"experts\[1\].autoscaling_config: not with residency"):
        parse_service_config(args)
