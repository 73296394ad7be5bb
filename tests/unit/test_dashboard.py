"""/dashboard without Ray: the ActivityLog's numbers against hand calculations, TeeMetrics, and the
page and stats routes over the real FastAPI app (keys configured) with fake experts."""

from __future__ import annotations

import inspect
import random

import numpy as np
import pytest
from fastapi.testclient import TestClient

from router_service.api.app import create_app
from router_service.config.service import parse_service_config
from router_service.errors import ExpertUnavailableError
from router_service.experts.fake import FakeExpertBackend
from router_service.routing.embedding import HashingEmbedder
from router_service.serving.activity import ActivityLog, TeeMetrics, percentile
from router_service.serving.assembly import build_service
from router_service.serving.metrics import Metrics, RecordingMetrics, RequestSummary

from .helpers import assert_openai_error, config_dict

KEY = "sk-dashboard-test"
AUTH = {"authorization": f"Bearer {KEY}"}


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def summary(n: int, **fields) -> RequestSummary:
    base = dict(request_id=f"r{n}", strategy="keyword", experts=("math",), chosen=("math",))
    return RequestSummary(**{**base, **fields})


def hook_names() -> list[str]:
    return [name for name in vars(Metrics) if not name.startswith("_") and callable(getattr(Metrics, name))]


# -- ActivityLog --------------------------------------------------------------------------------
def test_percentile_matches_numpys_linear_method():
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    rng = random.Random(0)
    for size in (2, 3, 10, 101):
        values = [rng.uniform(0, 500) for _ in range(size)]
        for q in (50, 90, 99):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_snapshot_numbers_from_known_summaries():
    log = ActivityLog(max_recent=10, clock=FakeClock())
    log.completed(summary(1, latency_ms=10.0, cost=0.001, prompt_tokens=5, completion_tokens=3, scores={"math": 2.0}))
    log.completed(
        summary(
            2,
            experts=("math", "general"),
            chosen=("math", "general"),
            latency_ms=20.0,
            cost=0.002,
            prompt_tokens=10,
            completion_tokens=4,
        )
    )
    log.completed(summary(3, strategy="direct", experts=("text",), chosen=(), latency_ms=30.0, cost=None))
    log.completed(summary(4, latency_ms=40.0, cost=0.0, cache="hit"))
    log.completed(summary(5, experts=("general",), latency_ms=100.0, cost=0.0005, fallback=True, status=200))
    for expert, status in [("math", 200), ("math", 200), ("general", 502), ("general", 200), ("text", 200)]:
        log.request(expert, status)
    log.fallback("math", "timeout")
    log.cache(True)
    for _ in range(3):
        log.cache(False)
    log.rate_limited("requests")
    log.rate_limited("requests")
    log.rate_limited("budget")
    log.rejected()
    for error_type in ("rate_limit_exceeded", "rate_limit_exceeded", "rate_limit_exceeded", "authentication_error"):
        log.error(error_type)
    log.routing_latency("keyword", 0.002)
    log.routing_latency("keyword", 0.004)

    snap = log.snapshot()

    assert snap["requests"]["completed"] == 5
    assert snap["requests"]["by_strategy"] == {"keyword": 4, "direct": 1}
    assert snap["requests"]["by_expert"] == {
        "general": {"total": 2, "by_status": {"200": 1, "502": 1}},
        "math": {"total": 2, "by_status": {"200": 2}},
        "text": {"total": 1, "by_status": {"200": 1}},
    }
    # Latencies 10, 20, 30, 40, 100: p50 is the middle one; p90 sits at rank 3.6 (40 + 0.6 * 60) and
    # p99 at rank 3.96 (40 + 0.96 * 60).
    assert snap["latency_ms"] == {"p50": 30.0, "p90": 76.0, "p99": 97.6, "count": 5}
    assert snap["routing_ms"]["p50"] == pytest.approx(3.0)
    # 0.001 + 0.002 (split 0.001 / 0.001 over math and general) + 0.0005 (general).
    assert snap["cost"]["total_usd"] == pytest.approx(0.0035)
    assert snap["cost"]["by_expert"] == pytest.approx({"math": 0.002, "general": 0.0015})
    assert snap["tokens"] == {"prompt": 15, "completion": 7}
    assert snap["fallbacks"] == {
        "total": 1,
        "requests": 1,
        "by_expert": [{"expert": "math", "reason": "timeout", "count": 1}],
    }
    assert snap["throttled"] == {"total": 4, "rate_limited": {"requests": 2, "budget": 1}, "capacity": 1}
    assert snap["cache"] == {"hits": 1, "misses": 3, "hit_rate": 0.25}
    assert snap["errors"] == {"authentication_error": 1, "rate_limit_exceeded": 3}

    recent = snap["recent"]
    assert [d["request_id"] for d in recent] == ["r5", "r4", "r3", "r2", "r1"]  # newest first
    assert recent[0]["fallback"] is True and recent[1]["cache"] == "hit"
    assert recent[2]["strategy"] == "direct" and recent[2]["chosen"] == [] and recent[2]["cost"] is None
    assert recent[3]["experts"] == ["math", "general"] and recent[3]["tokens"] == 14
    assert recent[4]["scores"] == [["math", 2.0]]
    assert recent[0]["time"] > recent[4]["time"]


def test_window_is_bounded_and_counters_are_not():
    log = ActivityLog(max_recent=3, clock=FakeClock())
    for n, latency in enumerate([500.0, 400.0, 1.0, 2.0, 3.0]):
        log.completed(summary(n, latency_ms=latency, cost=0.001))
    snap = log.snapshot(recent=2)
    assert snap["window"] == {"requests": 3, "max": 3}
    assert snap["latency_ms"] == {"p50": 2.0, "p90": 2.8, "p99": 2.98, "count": 3}  # the slow two have left
    assert snap["requests"]["completed"] == 5 and snap["cost"]["total_usd"] == pytest.approx(0.005)
    assert [d["request_id"] for d in snap["recent"]] == ["r4", "r3"]
    assert log.snapshot(recent=0)["recent"] == []


def test_top_scores_are_sorted_and_capped():
    log = ActivityLog()
    log.completed(summary(1, scores={f"e{i}": float(i) for i in range(8)}))
    assert log.snapshot()["recent"][0]["scores"] == [["e7", 7.0], ["e6", 6.0], ["e5", 5.0], ["e4", 4.0], ["e3", 3.0]]


def test_empty_log_has_no_percentiles_and_no_hit_rate():
    snap = ActivityLog().snapshot()
    assert snap["latency_ms"] == {"p50": None, "p90": None, "p99": None, "count": 0}
    assert snap["cache"]["hit_rate"] is None and snap["recent"] == []


def test_activity_log_and_tee_implement_every_metrics_hook():
    for cls in (ActivityLog, TeeMetrics):
        for name in hook_names():
            assert inspect.signature(getattr(cls, name)) == inspect.signature(getattr(Metrics, name)), (cls, name)


def test_tee_forwards_every_hook_to_every_sink():
    first, second = RecordingMetrics(), RecordingMetrics()
    tee = TeeMetrics(first, second)
    tee.request("math", 200)
    tee.routing_latency("keyword", 0.01)
    tee.fallback("math", "error")
    tee.error("internal_error")
    tee.rejected()
    tee.rate_limited("tokens")
    tee.cache(False)
    tee.completed(summary(1))
    for sink in (first, second):
        assert sink.counts == {
            ("request", "math", 200): 1,
            ("fallback", "math", "error"): 1,
            ("error", "internal_error"): 1,
            ("rejected",): 1,
            ("rate_limited", "tokens"): 1,
            ("cache", "miss"): 1,
        }
        assert sink.latencies == [0.01] and [s.request_id for s in sink.summaries] == ["r1"]


# -- HTTP ---------------------------------------------------------------------------------------
def dashboard_client(monkeypatch, *, get_service=None, dashboard: bool = True):
    monkeypatch.delenv("COE_API_KEYS", raising=False)
    args = config_dict()
    args["server"]["api_keys"] = [KEY]
    args["gateway"] = {"store": "memory://", "dashboard": dashboard}
    config = parse_service_config(args)
    activity = ActivityLog()
    metrics = TeeMetrics(RecordingMetrics(), activity)
    backends = {e.id: FakeExpertBackend(e.id) for e in config.experts}
    service = build_service(config, backends, lambda name: HashingEmbedder(), metrics=metrics)
    app = create_app(
        get_service or (lambda: service), config.server, metrics, gateway=config.gateway, activity=activity
    )
    return TestClient(app)


def test_page_is_open_and_stats_need_the_key(monkeypatch):
    with dashboard_client(monkeypatch) as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for element in ('id="prompt"', 'id="strategy"', 'id="lambda"', 'id="send"', 'id="chosen"', 'id="scores"'):
            assert element in page.text
        assert_openai_error(client.get("/dashboard/api/stats"), 401)
        bad = client.get("/dashboard/api/stats", headers={"authorization": "Bearer wrong-key"})
        assert assert_openai_error(bad, 401)["type"] == "authentication_error"
        # Only the page itself is open: a path beside it is not.
        assert_openai_error(client.get("/dashboard/"), 401)


def test_page_is_self_contained_and_prefix_relative():
    from router_service.api.dashboard import dashboard_page

    page = dashboard_page()
    assert "http://" not in page and "https://" not in page  # no CDN: the router may have no internet
    # Every call goes through BASE, derived from where the page was served (Serve route prefixes).
    assert "location.pathname" in page
    assert 'fetch("/' not in page and "fetch('/" not in page
    assert "fetch(`${BASE}/dashboard/api/stats" in page and "fetch(`${BASE}/v1/chat/completions" in page


def test_stats_describe_the_router_and_show_a_chat_request(monkeypatch):
    with dashboard_client(monkeypatch) as client:
        client.get("/dashboard/api/stats")  # a 401, which the stats then count
        before = client.get("/dashboard/api/stats", headers=AUTH)
        assert before.status_code == 200 and before.headers["cache-control"] == "no-store"
        body = before.json()
        assert body["router_error"] is None
        router = body["router"]
        assert router["default_strategy"] == "keyword"
        assert {s["name"] for s in router["strategies"]} == {"keyword", "fixed"}
        assert [e["id"] for e in router["experts"]] == ["math", "text", "general"]
        assert router["max_tokens_limit"] == 64
        assert body["activity"]["requests"]["completed"] == 0

        chat = client.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={
                "model": "coe",
                "messages": [{"role": "user", "content": "add 2 sum 3"}],
                "routing": {"strategy": "keyword", "cost_weight": 0.3},
                "max_tokens": 8,
            },
        )
        assert chat.status_code == 200, chat.text
        routing = chat.json()["routing"]
        assert routing["chosen"] == ["math"]

        activity = client.get("/dashboard/api/stats", headers=AUTH).json()["activity"]
        assert activity["requests"]["completed"] == 1
        assert activity["requests"]["by_expert"] == {"math": {"total": 1, "by_status": {"200": 1}}}
        assert activity["errors"] == {"authentication_error": 1}
        [decision] = activity["recent"]
        assert decision["strategy"] == "keyword" and decision["chosen"] == ["math"] and decision["status"] == 200
        assert decision["scores"][0] == ["math", routing["scores"]["math"]]
        assert decision["cost"] == pytest.approx(routing["cost"]) and activity["cost"]["total_usd"] > 0
        assert activity["tokens"]["completion"] > 0 and activity["latency_ms"]["count"] == 1


def test_stats_without_a_router_still_return_the_activity(monkeypatch):
    def no_router():
        raise ExpertUnavailableError("no expert application is running yet")

    with dashboard_client(monkeypatch, get_service=no_router) as client:
        response = client.get("/dashboard/api/stats", headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert body["router"] is None
        assert body["router_error"]["type"] == "service_unavailable"
        assert "no expert" in body["router_error"]["message"]
        assert body["activity"]["requests"]["completed"] == 0


def test_recent_is_bounded_by_the_window(monkeypatch):
    with dashboard_client(monkeypatch) as client:
        assert_openai_error(client.get("/dashboard/api/stats?recent=100000", headers=AUTH), 400, param="query.recent")


def test_dashboard_can_be_switched_off(monkeypatch):
    with dashboard_client(monkeypatch, dashboard=False) as client:
        assert client.get("/dashboard/api/stats", headers=AUTH).status_code == 404
        assert client.get("/dashboard").status_code == 404
