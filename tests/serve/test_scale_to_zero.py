"""Scale to zero (#15): an expert with `autoscaling_config.min_replicas: 0` starts only when asked. A
request for it while it is cold either waits for Serve to start a replica (bounded) or is answered by
a warm expert while it starts, by config or per request, and `routing.cold_start` says which."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.serve.conftest import deploy_apps, wait_healthy
from tests.serve.test_split_deployment import _wait_for_models
from tests.unit.helpers import config_dict

pytestmark = pytest.mark.serve

ROUTER_APP = "zero"
PREFIX = "/zero"
COLD = {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1, "upscale_delay_s": 0, "downscale_delay_s": 600}
POETRY = {"id": "poetry", "model": "org/poetry-7b", "skills": ["poem", "rhyme"], "timeout_s": 2}


def apps() -> list[dict]:
    args = {k: v for k, v in config_dict().items() if k != "experts"}
    args["discovery"] = {"interval_s": 0.3, "app_prefix": "zero-"}
    experts = {e["id"]: e for e in config_dict()["experts"]}
    experts["text"] = {**experts["text"], "autoscaling_config": COLD}
    experts["poetry"] = {**POETRY, "autoscaling_config": COLD}
    router = {
        "name": ROUTER_APP,
        "route_prefix": PREFIX,
        "import_path": "deployments.app:build_router_app",
        "args": args,
    }
    return [router] + [
        {
            "name": f"zero-{expert_id}",
            "route_prefix": None,
            "import_path": "deployments.fake_expert:build_fake_expert_app",
            "args": {"expert": entry, "fake": {}},
        }
        for expert_id, entry in experts.items()
    ]


def running_replicas(serve, expert_id: str) -> int:
    app = serve.status().applications[f"zero-{expert_id}"]
    ((_, deployment),) = app.deployments.items()
    return sum(n for state, n in deployment.replica_states.items() if str(state).endswith("RUNNING"))


def ask(base: str, text: str, **routing) -> httpx.Response:
    body = {"model": "coe", "messages": [{"role": "user", "content": text}], "max_tokens": 8}
    if routing:
        body["routing"] = routing
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)


def test_a_cold_expert_starts_only_when_asked_and_waits_or_falls_back(ray_serve):
    deploy_apps(ray_serve, apps())
    base = wait_healthy(ray_serve, ROUTER_APP, PREFIX)
    _wait_for_models(base, {"math", "text", "general", "poetry"})  # the cold ones are served too
    assert running_replicas(ray_serve, "text") == 0 and running_replicas(ray_serve, "poetry") == 0

    # fallback (per request): a warm expert answers at once, and the cold one is started meanwhile.
    answer = ask(base, "Reverse the word garden", cold_start="fallback")
    assert answer.status_code == 200, answer.text
    cold = answer.json()["routing"]["cold_start"]
    assert cold["expert"] == "text" and cold["action"] == "fallback"
    assert answer.headers["x-coe-experts"] == cold["answered_by"] != "text"
    deadline = time.monotonic() + 120
    while running_replicas(ray_serve, "text") == 0:
        assert time.monotonic() < deadline, "the cold expert was not started"
        time.sleep(0.5)
    assert running_replicas(ray_serve, "poetry") == 0  # nobody asked for it yet

    # wait (the router's default): the request is answered by the cold expert once Serve started it.
    answer = ask(base, "Write a poem about the sea")
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-coe-experts"] == "poetry"
    assert answer.json()["routing"]["cold_start"] == {"expert": "poetry", "action": "waited"}
    assert running_replicas(ray_serve, "poetry") == 1
    deploy_apps(ray_serve, [], remove=tuple(a["name"] for a in apps()))
