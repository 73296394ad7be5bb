"""Per-key limits on real Ray Serve: two router replicas share one count, and a router restart keeps
it. The same suite on the embedded SQLite store and on a real redis-server started by the fixture."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serve.conftest import deploy, deploy_apps
from tests.unit.helpers import config_dict

LIMITED = "sk-limited-0123456789"
SPENDER = "sk-spender-0123456789"
RPM = 6


def limits_config(store: str) -> dict:
    args = config_dict()
    args["router_deployment"] = {"num_replicas": 2, "num_cpus": 0}
    args["gateway"] = {
        "store": store,
        "keys": [
            {"name": "limited", "key": LIMITED, "requests_per_minute": RPM},
            # Any answer costs more than this: one request, then refused for the rest of the UTC day.
            {"name": "spender", "key": SPENDER, "budget_usd": 1e-12},
        ],
    }
    return args


def ask(client: httpx.Client, key: str) -> httpx.Response:
    body = {"model": "coe", "messages": [{"role": "user", "content": "What is the sum of 2 and 3?"}]}
    return client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def wait_for_fresh_minute_window(margin_s: float = 25.0) -> None:
    """Requests-per-minute windows are clock minutes: start where this test cannot straddle two."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.1)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path_factory) -> str:
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return f"sqlite:///{tmp_path_factory.mktemp('limits') / 'counters.sqlite3'}"


def test_two_router_replicas_share_the_count_and_a_restart_keeps_it(ray_serve, store):
    name = f"limits-{store.split(':')[0]}"
    prefix = f"/{name}"
    base = deploy(ray_serve, limits_config(store), {"math": {}, "text": {}, "general": {}}, name, prefix)
    with httpx.Client(base_url=base, timeout=30) as client:
        wait_for_fresh_minute_window()
        replicas: set[str] = set()
        statuses: list[int] = []
        # Concurrent, so Serve spreads them over both replicas; more until both have answered.
        with ThreadPoolExecutor(8) as pool:
            while len(statuses) < 4 * RPM and (len(statuses) < 3 * RPM or len(replicas) < 2):
                for answer in pool.map(lambda _: ask(client, LIMITED), range(RPM)):
                    statuses.append(answer.status_code)
                    replicas.add(answer.headers["x-coe-replica"])
        assert len(replicas) == 2, "both router replicas must have answered"
        assert statuses.count(200) == RPM, statuses
        assert statuses.count(429) == len(statuses) - RPM

        assert ask(client, SPENDER).status_code == 200
        refused = ask(client, SPENDER)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_limit_exceeded"

    # Restart: the application goes away (its replicas with it), then comes back on the same store.
    deploy_apps(ray_serve, [], remove=(name,))
    deadline = time.monotonic() + 120
    while name in ray_serve.status().applications and time.monotonic() < deadline:
        time.sleep(0.5)
    assert name not in ray_serve.status().applications
    base = deploy(ray_serve, limits_config(store), {"math": {}, "text": {}, "general": {}}, name, prefix)
    with httpx.Client(base_url=base, timeout=30) as client:
        after = ask(client, SPENDER)
    assert after.status_code == 429, after.text
    assert after.json()["error"]["code"] == "budget_limit_exceeded"
    deploy_apps(ray_serve, [], remove=(name,))
