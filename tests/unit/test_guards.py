"""Auth, the in-flight bound (429 + Retry-After) and metrics hooks, on the FastAPI app without Ray."""

import asyncio
import logging

import httpx
import pytest

from router_service.serving.assembly import build_service
from router_service.config.service import parse_service_config
from router_service.routing.embedding import HashingEmbedder
from router_service.experts.fake import FakeExpertBackend
from router_service.api.app import create_app
from router_service.serving.metrics import RecordingMetrics

from .helpers import assert_openai_error, config_dict

pytestmark = pytest.mark.anyio
BODY = {"model": "coe", "messages": [{"role": "user", "content": "sum 1 and 2"}]}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def client_for(server=None, fakes=None, metrics=None):
    args = config_dict()
    args["server"].update(server or {})
    config = parse_service_config(args)
    backends = {e.id: FakeExpertBackend(e.id, **(fakes or {}).get(e.id, {})) for e in config.experts}
    service = build_service(config, backends, lambda n: HashingEmbedder(), metrics=metrics)
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
    metrics = RecordingMetrics()
    async with client_for({"max_in_flight": 2, "retry_after_s": 3},
                          fakes={"math": {"delay_s": 0.3}}, metrics=metrics) as c:
        results = await asyncio.gather(*(c.post("/v1/chat/completions", json=BODY) for _ in range(6)))
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 200, 429, 429, 429, 429]
        rejected = [r for r in results if r.status_code == 429]
        assert all(r.headers["retry-after"] == "3" for r in rejected)
        assert_openai_error(rejected[0], 429)
        assert metrics.counts[("rejected",)] == 4
        # Capacity is released: the next request is served.
        assert (await c.post("/v1/chat/completions", json=BODY)).status_code == 200


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
