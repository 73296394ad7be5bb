"""Operations on real Ray Serve: hot reconfigure without restarts, and an expert replica killed mid-flight."""

from __future__ import annotations

import concurrent.futures as futures
import time

import httpx
import pytest

from tests.serve.conftest import assert_answered_despite_kill, deploy
from tests.unit.helpers import config_dict

pytestmark = pytest.mark.serve


def _replica_actors(app_name: str) -> dict[str, str]:
    """deployment name → names of the live replica actors of that app (a new replica has a new name)."""
    import ray

    out: dict[str, list[str]] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if name.startswith(f"SERVE_REPLICA::{app_name}#"):
            out.setdefault(name.split("#")[1], []).append(name)
    return {k: ",".join(sorted(v)) for k, v in out.items()}


def _ask(base: str, content: str, **extra) -> httpx.Response:
    body = {"model": "coe", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)


def test_hot_reconfigure_changes_routing_without_restarting_anything(ray_serve):
    """Router settings in the Serve config's `deployments: [{name: router, user_config: ...}]` are a
    lightweight update: Serve calls reconfigure() on the live router; no replica restarts."""
    args = config_dict()
    base = deploy(ray_serve, args, {}, name="hot", route_prefix="/hot")
    assert _ask(base, "please sum these").headers["x-coe-experts"] == "math"
    before = _replica_actors("hot")
    assert set(before) == {"router", "expert-math", "expert-text", "expert-general"}

    new_router = dict(args["router"], strategy="fixed", default_expert="text")
    deploy(
        ray_serve,
        args,
        {},
        name="hot",
        route_prefix="/hot",
        deployments=[{"name": "router", "user_config": {"router": new_router}}],
    )
    deadline = time.monotonic() + 60
    while _ask(base, "please sum these").headers.get("x-coe-experts") != "text":
        assert time.monotonic() < deadline, "router settings were not applied"
        time.sleep(0.5)
    assert _ask(base, "please sum these").json()["routing"]["strategy"] == "fixed"
    assert _replica_actors("hot") == before


def _wait_in_flight(ray_serve, app: str, deployment: str, hang_guard_s: float = 120) -> None:
    """Until the fake expert reports a request inside its answer. Event-driven: the kill below must land
    while requests run there, however slowly this machine gets them there (a fixed sleep did not)."""
    handle = ray_serve.get_deployment_handle(deployment, app_name=app)
    deadline = time.monotonic() + hang_guard_s
    while handle.stats.remote().result()["in_flight"] < 1:
        assert time.monotonic() < deadline, f"no request reached {deployment}"
        time.sleep(0.05)


def test_killed_expert_replica_every_request_answered_and_replica_restarts(ray_serve):
    import ray

    args = config_dict()
    for expert in args["experts"]:
        expert["timeout_s"] = 10
    # math holds each answer for 3 s, so a request seen inside it is still there when the kill lands.
    base = deploy(
        ray_serve, args, {"math": {"delay_s": 3.0}, "text": {"delay_s": 0.2}}, name="kill", route_prefix="/kill"
    )
    victim = _replica_actors("kill")["expert-math"]
    with futures.ThreadPoolExecutor(16) as pool:
        math_jobs = [pool.submit(_ask, base, "please sum 1 and 2") for _ in range(8)]
        text_jobs = [pool.submit(_ask, base, "reverse the word") for _ in range(8)]
        _wait_in_flight(ray_serve, "kill", "expert-math")
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        math_results = [j.result() for j in math_jobs]
        text_results = [j.result() for j in text_jobs]
    assert_answered_despite_kill(math_results, "math", text_results, "text")

    deadline = time.monotonic() + 120
    while True:
        replicas = _replica_actors("kill").get("expert-math")
        if replicas and victim not in replicas:
            r = _ask(base, "please sum 5 and 6")
            if r.status_code == 200 and r.headers["x-coe-experts"] == "math":
                break
        assert time.monotonic() < deadline, "math replica was not restarted and routed to again"
        time.sleep(1)
