"""A memory budget on real Serve, checked against the experts' real state (each fake engine says
whether it is loaded), not against the router's bookkeeping (#15 defect 1)."""

from __future__ import annotations

import time

import httpx

from tests.serve.conftest import deploy, deploy_apps
from tests.unit.helpers import config_dict

APP = "resid"
EXPERTS = ("math", "text", "general")


def loaded(serve) -> set[str]:
    states = {e: serve.get_deployment_handle(f"expert-{e}", app_name=APP).stats.remote().result() for e in EXPERTS}
    return {e for e, s in states.items() if s["loaded"]}


def ask(base: str, model: str, text: str = "please sum these") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)


def test_a_hot_reconfigure_keeps_what_is_really_loaded(ray_serve):
    args = config_dict()
    args["residency"] = {"max_resident_experts": 1, "load_window_s": 0}
    base = deploy(ray_serve, args, {e: {} for e in EXPERTS}, name=APP, route_prefix=f"/{APP}")
    assert loaded(ray_serve) == {"math"}  # the first expert in config order starts loaded
    assert ask(base, "text").status_code == 200
    assert loaded(ray_serve) == {"text"}

    # Reconfigure in place: the router rebuilds its service, and must not forget that 'text' is loaded.
    new_router = dict(args["router"], strategy="fixed", default_expert="general")
    deploy(
        ray_serve,
        args,
        {e: {} for e in EXPERTS},
        name=APP,
        route_prefix=f"/{APP}",
        deployments=[{"name": "router", "user_config": {"router": new_router}}],
    )
    deadline = time.monotonic() + 60
    while (answer := ask(base, "coe")).headers.get("x-coe-experts") != "general":
        assert answer.status_code == 200, answer.text
        assert time.monotonic() < deadline, "router settings were not applied"
        time.sleep(0.5)
    assert loaded(ray_serve) == {"general"}, "the budget of 1 was exceeded in the engines"

    direct = ask(base, "math")
    assert direct.status_code == 200, direct.text
    assert direct.json()["choices"][0]["message"]["content"].startswith("[math]")
    assert loaded(ray_serve) == {"math"}
    deploy_apps(ray_serve, [], remove=(APP,))
