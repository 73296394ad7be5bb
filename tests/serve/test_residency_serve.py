"""A memory budget on real Serve, checked against the experts' real state (each fake engine says
whether it is loaded, and when it held memory), not against the router's bookkeeping (#15 defects 1
and 4)."""

from __future__ import annotations

import itertools
import time
from concurrent import futures

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


def test_two_router_replicas_share_one_budget_checked_against_the_engines(ray_serve):
    """Defect 4: with 2 router replicas and a budget of 1, concurrent requests over 3 experts. The
    engines' own timelines (load start to offload end, machine-wide monotonic clock) never overlap."""
    app = "resid2"
    args = config_dict()
    args["residency"] = {"max_resident_experts": 1, "load_window_s": 0.05}
    args["router_deployment"] = {"num_replicas": 2, "num_cpus": 0}
    fakes = {e: {"load_delay_s": 0.2, "delay_s": 0.05} for e in EXPERTS}
    base = deploy(ray_serve, args, fakes, name=app, route_prefix=f"/{app}")
    models = [m for m in EXPERTS for _ in range(8)]
    with futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda m: ask(base, m), models))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    assert [a.headers["x-coe-experts"] for a in answers] == models
    assert len({a.headers["x-coe-replica"] for a in answers}) == 2, "both router replicas took requests"

    events = []
    for expert in EXPERTS:
        stats = ray_serve.get_deployment_handle(f"expert-{expert}", app_name=app).stats.remote().result()
        events += [(t, 1 if kind == "loaded" else -1) for kind, t in stats["timeline"]]
    events.sort()
    assert max(itertools.accumulate(delta for _, delta in events)) == 1, "the engines held more than the budget"
    deploy_apps(ray_serve, [], remove=(app,))


def most_loaded_at_once(timelines: list[list[tuple[str, float]]]) -> int:
    events = sorted((t, 1 if kind == "loaded" else -1) for timeline in timelines for kind, t in timeline)
    return max(itertools.accumulate(delta for _, delta in events))


def test_a_budget_in_the_split_form_holds_across_replicas_and_a_newly_added_expert(ray_serve):
    """The default file form: every expert its own application, the router discovers them, and the
    router application's `residency` budget spans them all, a newly deployed expert included."""
    from tests.serve.test_split_deployment import POETRY, _wait_for_models

    router_args = {k: v for k, v in config_dict().items() if k != "experts"}
    router_args["discovery"] = {"interval_s": 0.3, "app_prefix": "sb-"}
    router_args["residency"] = {"max_resident_experts": 1, "load_window_s": 0.05}
    router_args["router_deployment"] = {"num_replicas": 2, "num_cpus": 0}
    router_app = {"name": "sb", "route_prefix": "/sb", "import_path": "deployments.app:build_router_app"}

    def expert_app(entry: dict) -> dict:
        entry = {**entry, "start_loaded": entry["id"] == "math"}  # beyond the budget: start unloaded
        return {
            "name": f"sb-{entry['id']}",
            "route_prefix": None,
            "import_path": "deployments.fake_expert:build_fake_expert_app",
            "args": {"expert": entry, "fake": {"load_delay_s": 0.2, "delay_s": 0.05}},
        }

    experts = config_dict()["experts"]
    deploy_apps(ray_serve, [{**router_app, "args": router_args}] + [expert_app(e) for e in experts])
    base = "http://127.0.0.1:8765/sb"
    _wait_for_models(base, set(EXPERTS))
    deploy_apps(ray_serve, [expert_app(POETRY)])
    _wait_for_models(base, {*EXPERTS, "poetry"})
    # Each router replica discovers on its own: wait until both serve the new expert.
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < 2:
        models = httpx.get(f"{base}/v1/models", timeout=10)
        if "poetry" in {m["id"] for m in models.json()["data"]}:
            seen.add(models.headers["x-coe-replica"])
        assert time.monotonic() < deadline, f"replicas serving poetry: {seen}"

    models = [m for m in (*EXPERTS, "poetry") for _ in range(6)]
    with futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda m: ask(base, m), models))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    assert [a.headers["x-coe-experts"] for a in answers] == models
    assert len({a.headers["x-coe-replica"] for a in answers}) == 2, "both router replicas took requests"
    timelines = [
        ray_serve.get_deployment_handle(f"expert-{e}", app_name=f"sb-{e}").stats.remote().result()["timeline"]
        for e in (*EXPERTS, "poetry")
    ]
    assert all(timelines), "every expert was loaded at some point"
    assert most_loaded_at_once(timelines) == 1, "the engines held more than the budget"
    deploy_apps(ray_serve, [], remove=("sb", *(f"sb-{e}" for e in (*EXPERTS, "poetry"))))
