"""Auth, the in-flight bound (429 + Retry-After) and metrics hooks, on the FastAPI app without Ray."""

import asyncio
import logging

import httpx
import pytest

from router_service.api.app import create_app
from router_service.config.service import parse_service_config
from router_service.experts.fake import FakeExpertBackend
from router_service.routing.embedding import HashingEmbedder
from router_service.serving.assembly import build_service
from router_service.serving.metrics import RecordingMetrics

from .gates import Gate, GatedExpert, eventually, until
from .helpers import assert_openai_error, config_dict

pytestmark = pytest.mark.anyio
BODY = {"model": "coe", "messages": [{"role": "user", "content": "sum 1 and 2"}]}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def client_for(server=None, fakes=None, metrics=None, backends=None):
    """`fakes`: FakeExpertBackend options per expert id; `backends`: ready-made backends replacing those."""
    args = config_dict()
    args["server"].update(server or {})
    config = parse_service_config(args)
    built = {e.id: FakeExpertBackend(e.id, **(fakes or {}).get(e.id, {})) for e in config.experts}
    service = build_service(config, {**built, **(backends or {})}, lambda n: HashingEmbedder(), metrics=metrics)
    app = create_app(lambda: service, config.server, metrics)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_api_keys_required_except_health(caplog):
    caplog.set_level(logging.DEBUG)
    async with client_for({"api_keys": ["sk-secret-1"]}) as c:
        assert_openai_error(await c.post("/v1/chat/completions", json=BODY), 401)
        assert_openai_error(await c.get("/v1/models"), 401)
        bad = await c.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer nope"})
        assert assert_openai_error(bad, 401)["type"] == "authentication_error"
        ok = await c.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer sk-secret-1"})
        assert ok.status_code == 200
        assert (await c.get("/health")).status_code == 200
    assert "sk-secret-1" not in caplog.text


async def test_api_keys_from_environment(monkeypatch):
    monkeypatch.setenv("COE_API_KEYS", "k-env-a, k-env-b")
    async with client_for() as c:
        assert_openai_error(await c.get("/v1/models"), 401)
        assert (await c.get("/v1/models", headers={"authorization": "Bearer k-env-b"})).status_code == 200


async def test_no_keys_means_open(monkeypatch):
    monkeypatch.delenv("COE_API_KEYS", raising=False)
    async with client_for() as c:
        assert (await c.get("/v1/models")).status_code == 200


async def test_over_capacity_gets_429_with_retry_after_and_others_complete():
    """At the in-flight bound, further requests get 429 + Retry-After at once (no queueing); the admitted
    ones complete, and capacity is released afterwards.

    Bug 5: event-driven. The two admitted requests are held inside the expert at a gate (not by a 0.3 s
    delay), so they are provably in flight while the other four arrive; those four must be answered
    while the gate is still shut, which is what "rejected at once, not queued" means.
    """
    metrics = RecordingMetrics()
    gate = Gate()
    async with client_for(
        {"max_in_flight": 2, "retry_after_s": 3}, backends={"math": GatedExpert("math", gate)}, metrics=metrics
    ) as c:
        admitted = [asyncio.create_task(c.post("/v1/chat/completions", json=BODY)) for _ in range(2)]
        assert await eventually(lambda: gate.waiting == 2), "both admitted requests should reach the expert"
        # The limiter answers these itself, on the event loop: `until` may bound the wait.
        over = [asyncio.create_task(c.post("/v1/chat/completions", json=BODY)) for _ in range(4)]
        assert await until(lambda: all(t.done() for t in over)), "requests over the bound were queued"
        assert gate.waiting == 2 and not any(t.done() for t in admitted)  # still in flight meanwhile
        rejected = [t.result() for t in over]
        assert [r.status_code for r in rejected] == [429] * 4
        assert all(r.headers["retry-after"] == "3" for r in rejected)
        assert_openai_error(rejected[0], 429)
        assert metrics.counts[("rejected",)] == 4
        gate.open()
        assert [r.status_code for r in await asyncio.gather(*admitted)] == [200, 200]
        # Capacity is released: the next request is served.
        assert (await c.post("/v1/chat/completions", json=BODY)).status_code == 200
    assert gate.passed == 3


async def test_metrics_hooks_record_requests_fallbacks_and_errors():
    metrics = RecordingMetrics()
    async with client_for(fakes={"math": {"fail": True}}, metrics=metrics) as c:
        assert (await c.post("/v1/chat/completions", json=BODY)).status_code == 200
        await c.post("/v1/chat/completions", json={"model": "coe"})
    assert metrics.counts[("fallback", "math", "expert_failed")] == 1
    assert sum(v for k, v in metrics.counts.items() if k[0] == "request" and k[2] == 200) == 1
    assert metrics.counts[("error", "invalid_request_error")] == 1
    assert len(metrics.latencies) == 1


def test_open_paths_are_found_under_a_route_prefix():
    from router_service.api.guards import app_path

    assert app_path({"path": "/coe/health", "root_path": "/coe"}) == "/health"
    assert app_path({"path": "/health", "root_path": ""}) == "/health"
    assert app_path({"path": "/v1/models", "root_path": "/other"}) == "/v1/models"
