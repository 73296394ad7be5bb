"""Per-key limits: requests, tokens and budget, each with its 429 and OpenAI-style headers; keys held
hashed; a key near its budget steered to cheaper experts. Over HTTP through the real FastAPI app."""

from __future__ import annotations

import calendar
import logging
import math
import time
from typing import Any

import httpx
import pytest

from router_service.api.app import create_app
from router_service.config.gateway import GatewayConfig, KeyLimits, key_hash
from router_service.errors import ConfigError, RateLimitError
from router_service.gateway.counters import MemoryCounterStore, open_store
from router_service.gateway.limits import Caller, KeyRing, Limiter
from router_service.serving.metrics import RecordingMetrics
from tests.unit.helpers import assert_openai_error, make_service

pytestmark = pytest.mark.anyio

KEY = "sk-team-a-0123456789"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def tomorrow_at(seconds_into_day: float) -> float:
    # In the future, so counters the stores expire by the real clock are still live.
    return (math.floor(time.time() / 86_400) + 1) * 86_400 + seconds_into_day


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = tomorrow_at(80_000) if now is None else now  # 22:13:20 UTC

    def __call__(self) -> float:
        return self.now


def caller(**limits: Any) -> Caller:
    return Caller("team-a", key_hash(KEY), KeyLimits(**limits))


# -- the limiter on its own ------------------------------------------------------------------------
async def test_requests_per_minute_refused_with_headers_then_reset_next_minute():
    clock = Clock()
    limiter = Limiter(MemoryCounterStore(), clock=clock)
    who = caller(requests_per_minute=2)
    first = await limiter.admit(who)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    await limiter.admit(who)
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(who)
    exc = refused.value
    assert exc.code == "requests_limit_exceeded"
    assert exc.headers["x-ratelimit-remaining-requests"] == "0"
    # 22:13:20 is 20 s into its minute: 40 s to the next one.
    assert exc.headers["retry-after"] == "40"
    assert exc.headers["x-ratelimit-reset-requests"] == "40s"
    clock.now += 40
    assert (await limiter.admit(who)).headers["x-ratelimit-remaining-requests"] == "1"


async def test_tokens_per_minute_charged_after_the_answer_then_refused():
    clock = Clock()
    limiter = Limiter(MemoryCounterStore(), clock=clock)
    who = caller(tokens_per_minute=100)
    assert (await limiter.admit(who)).headers["x-ratelimit-remaining-tokens"] == "100"
    await limiter.charge(who, 60, None)
    assert (await limiter.admit(who)).headers["x-ratelimit-remaining-tokens"] == "40"
    await limiter.charge(who, 60, None)  # the last answer of a window may overshoot by its own size
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(who)
    assert refused.value.code == "tokens_limit_exceeded"
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.value.headers["x-ratelimit-reset-tokens"] == "40s"


async def test_budget_refused_until_the_next_utc_day():
    clock = Clock()
    limiter = Limiter(MemoryCounterStore(), clock=clock)
    who = caller(budget_usd=0.01, budget_period="day")
    await limiter.charge(who, 10, 0.004)
    admitted = await limiter.admit(who)
    assert float(admitted.headers["x-coe-budget-remaining-usd"]) == pytest.approx(0.006)
    await limiter.charge(who, 10, 0.006)
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(who)
    assert refused.value.code == "budget_limit_exceeded"
    # 22:13:20 UTC: 1 h 46 min 40 s = 6400 s to midnight.
    assert refused.value.headers["retry-after"] == "6400"
    clock.now += 6400
    await limiter.admit(who)


async def test_month_budget_window_ends_at_the_first_of_next_month():
    year = time.gmtime().tm_year + 1
    clock = Clock(calendar.timegm((year, 11, 30, 23, 59, 59)))
    limiter = Limiter(MemoryCounterStore(), clock=clock)
    who = caller(budget_usd=1.0, budget_period="month")
    await limiter.charge(who, 0, 1.0)
    with pytest.raises(RateLimitError) as refused:
        await limiter.admit(who)
    assert refused.value.headers["retry-after"] == "1"
    clock.now += 1
    await limiter.admit(who)


async def test_a_request_refused_for_tokens_does_not_use_a_request_slot():
    clock = Clock()
    limiter = Limiter(MemoryCounterStore(), clock=clock)
    who = caller(requests_per_minute=1, tokens_per_minute=10)
    await limiter.charge(who, 10, None)
    with pytest.raises(RateLimitError):
        await limiter.admit(who)
    assert limiter.store.read([f"{who.hashed}:req:{int(clock.now + 40)}"]) == [0]


async def test_cheaper_raises_the_cost_weight_floor_with_spend():
    limiter = Limiter(MemoryCounterStore(), clock=Clock())
    who = caller(budget_usd=1.0, near_budget="cheaper", cheaper_from=0.5)
    floors = []
    for spend in (0.25, 0.25, 0.25, 0.2):  # cumulative 0.25, 0.5, 0.75, 0.95
        await limiter.charge(who, 0, spend)
        floors.append((await limiter.admit(who)).cost_weight_floor)
    assert floors == pytest.approx([0.0, 0.0, 0.5, 0.9])


async def test_a_key_without_limits_never_touches_the_store():
    class Exploding(MemoryCounterStore):
        def read(self, names):
            raise AssertionError("read")

    limiter = Limiter(Exploding())
    assert (await limiter.admit(caller())).headers == {}


async def test_store_past_its_deadline_is_a_503_not_a_hang():
    class Stuck(MemoryCounterStore):
        def read(self, names):
            import time

            time.sleep(1.0)
            return [0.0] * len(names)

    limiter = Limiter(Stuck(), timeout_s=0.1)
    with pytest.raises(Exception) as failed:
        await limiter.admit(caller(requests_per_minute=5))
    assert getattr(failed.value, "status_code", None) == 503


# -- keys ------------------------------------------------------------------------------------------
def test_keys_are_held_hashed_and_found_by_the_presented_key(monkeypatch):
    monkeypatch.setenv("TEAM_B_KEY", "sk-team-b-abcdefgh")
    gateway = GatewayConfig.model_validate(
        {
            "keys": [
                {"name": "team-a", "key_sha256": key_hash(KEY), "requests_per_minute": 5},
                {"name": "team-b", "key_env": "TEAM_B_KEY"},
            ],
            "default_limits": {"tokens_per_minute": 1000},
        }
    )
    ring = KeyRing.from_config(gateway, ["sk-plain-key-999"])
    assert all(KEY not in repr(c) and "sk-team-b" not in repr(c) for c in ring.callers)
    assert ring.find(KEY.encode()).name == "team-a"
    assert ring.find(b"sk-team-b-abcdefgh").name == "team-b"
    plain = ring.find(b"sk-plain-key-999")
    assert plain.name == f"key-{key_hash('sk-plain-key-999')[:8]}"
    assert plain.limits.tokens_per_minute == 1000
    assert ring.find(b"sk-wrong") is None


def test_a_key_env_that_is_unset_fails_naming_the_field(monkeypatch):
    monkeypatch.delenv("MISSING_KEY_VAR", raising=False)
    gateway = GatewayConfig.model_validate({"keys": [{"name": "x", "key_env": "MISSING_KEY_VAR"}]})
    with pytest.raises(ConfigError, match=r"gateway.keys\[0\].*MISSING_KEY_VAR"):
        KeyRing.from_config(gateway, [])


def test_a_key_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one of key, key_env, key_sha256"):
        GatewayConfig.model_validate({"keys": [{"name": "x", "key": "sk-123456789", "key_env": "Y"}]})


# -- over HTTP -------------------------------------------------------------------------------------
def client_for(gateway: dict, metrics=None, **router: Any) -> tuple[httpx.AsyncClient, Any, Any]:
    service, backends = make_service(**router)
    app = create_app(lambda: service, service.config.server, metrics, gateway=GatewayConfig.model_validate(gateway))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return client, service, backends


def ask(text: str = "What is the sum of 2 and 3?", **extra: Any) -> dict:
    return {"model": "coe", "messages": [{"role": "user", "content": text}], **extra}


AUTH = {"authorization": f"Bearer {KEY}"}


async def test_http_429_with_openai_body_and_headers_and_no_expert_call(tmp_path):
    metrics = RecordingMetrics()
    gateway = {
        "store": f"sqlite:///{tmp_path / 'c.sqlite3'}",
        "keys": [{"name": "team-a", "key": KEY, "requests_per_minute": 2}],
    }
    client, _, backends = client_for(gateway, metrics)
    async with client:
        ok = [await client.post("/v1/chat/completions", json=ask(), headers=AUTH) for _ in range(2)]
        refused = await client.post("/v1/chat/completions", json=ask(), headers=AUTH)
    assert [r.status_code for r in ok] == [200, 200]
    assert ok[0].headers["x-ratelimit-remaining-requests"] == "1"
    error = assert_openai_error(refused, 429)
    assert error["type"] == "rate_limit_error" and error["code"] == "requests_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert sum(b.calls for b in backends.values()) == 2
    assert metrics.counts[("rate_limited", "requests")] == 1


async def test_http_tokens_and_budget_are_charged_from_usage_and_routing_cost():
    gateway = {
        "store": "memory://",
        "keys": [{"name": "team-a", "key": KEY, "tokens_per_minute": 1_000_000, "budget_usd": 1.0}],
    }
    client, _, _ = client_for(gateway)
    async with client:
        first = await client.post("/v1/chat/completions", json=ask(), headers=AUTH)
        second = await client.post("/v1/chat/completions", json=ask(), headers=AUTH)
    body = first.json()
    used = body["usage"]["total_tokens"]
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 1_000_000 - used
    spent = 1.0 - float(second.headers["x-coe-budget-remaining-usd"])
    assert spent == pytest.approx(body["routing"]["cost"], rel=1e-4)


async def test_http_streamed_answer_is_charged_when_the_stream_ends():
    gateway = {"store": "memory://", "keys": [{"name": "team-a", "key": KEY, "tokens_per_minute": 1000}]}
    client, _, _ = client_for(gateway)
    async with client:
        streamed = await client.post(
            "/v1/chat/completions",
            json=ask(stream=True, stream_options={"include_usage": True}),
            headers=AUTH,
        )
        after = await client.post("/v1/chat/completions", json=ask(), headers=AUTH)
    usage = [line for line in streamed.text.splitlines() if '"usage"' in line][-1]
    import json

    total = json.loads(usage.removeprefix("data: "))["usage"]["total_tokens"]
    assert total > 0
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == 1000 - total


async def test_http_batch_counts_each_item_as_a_request():
    gateway = {"store": "memory://", "keys": [{"name": "team-a", "key": KEY, "requests_per_minute": 3}]}
    client, _, _ = client_for(gateway)
    async with client:
        ok = await client.post("/v1/batch", json={"requests": [ask(), ask()]}, headers=AUTH)
        refused = await client.post("/v1/batch", json={"requests": [ask(), ask()]}, headers=AUTH)
    assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-requests"] == "1"
    assert_openai_error(refused, 429)


async def test_http_a_fresh_steered_key_keeps_its_own_cost_weight_and_reports_the_budget():
    gateway = {
        "store": "memory://",
        "keys": [{"name": "team-a", "key": KEY, "budget_usd": 1.0, "near_budget": "cheaper", "cheaper_from": 0.0}],
    }
    client, _, _ = client_for(gateway)
    async with client:
        fresh = await client.post("/v1/chat/completions", json=ask(routing={"cost_weight": 0.1}), headers=AUTH)
    budget = fresh.json()["routing"]["budget"]
    assert budget == {"spent_fraction": 0.0, "cost_weight_floor": 0.0, "cost_weight": 0.1, "steered": False}


async def test_http_steering_applies_the_floor_to_the_strategy(monkeypatch):
    """With 60% spent and cheaper_from 0.2, λ is at least 0.5 whatever the request asked."""
    seen: list[float | None] = []
    gateway = GatewayConfig.model_validate(
        {
            "store": "memory://",
            "keys": [{"name": "team-a", "key": KEY, "budget_usd": 1.0, "near_budget": "cheaper", "cheaper_from": 0.2}],
        }
    )
    service, _ = make_service()
    strategy = service.strategies[service.default_strategy]
    original = strategy.route

    def spy(query, cards):
        seen.append(query.cost_weight)
        return original(query, cards)

    monkeypatch.setattr(strategy, "route", spy)
    store = MemoryCounterStore()
    monkeypatch.setattr("router_service.gateway.limits.open_store", lambda *a, **k: store)
    app = create_app(lambda: service, service.config.server, gateway=gateway)
    limiter = Limiter(store)
    await limiter.charge(Caller("team-a", key_hash(KEY), gateway.keys[0]), 0, 0.6)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        answer = await client.post("/v1/chat/completions", json=ask(routing={"cost_weight": 0.1}), headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert seen == [pytest.approx(0.5)]
    assert answer.json()["routing"]["budget"]["steered"] is True


async def test_keys_never_reach_the_logs(caplog):
    caplog.set_level(logging.DEBUG)
    gateway = {"store": "memory://", "keys": [{"name": "team-a", "key": KEY, "requests_per_minute": 1}]}
    client, _, _ = client_for(gateway)
    async with client:
        await client.post("/v1/chat/completions", json=ask(), headers=AUTH)
        await client.post("/v1/chat/completions", json=ask(), headers=AUTH)
        await client.post("/v1/chat/completions", json=ask(), headers={"authorization": "Bearer sk-wrong-key"})
    assert KEY not in caplog.text and "sk-wrong-key" not in caplog.text
    assert '"key": "team-a"' in caplog.text  # the name is what the request log shows


def test_sqlite_store_path_is_created(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'deep' / 'dir' / 'c.sqlite3'}")
    store.add("x", 1, 4e9)
    store.close()
    assert (tmp_path / "deep" / "dir" / "c.sqlite3").exists()
