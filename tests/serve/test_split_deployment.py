"""The split deployment: every expert its own Serve application, the router discovers them.

`serve deploy` of a config that adds or removes one expert application touches only that expert:
Serve versions each application by its own args, and the router picks the change up in place.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.serve.conftest import deploy_apps, wait_healthy
from tests.serve.test_operations import _ask, _replica_actors
from tests.unit.helpers import assert_openai_error, config_dict
from tests.unit.routing_fixtures import fitted_artifact

pytestmark = pytest.mark.serve

ROUTER_APP = "split"
PREFIX = "/split"


def _router_app() -> dict:
    args = {k: v for k, v in config_dict().items() if k != "experts"}
    args["discovery"] = {"interval_s": 0.3, "app_prefix": "split-"}
    return {"name": ROUTER_APP, "route_prefix": PREFIX, "import_path": "deployments.app:build_router_app", "args": args}


def _expert_app(entry: dict, fake: dict | None = None) -> dict:
    return {
        "name": f"split-{entry['id']}",
        "route_prefix": None,
        "import_path": "deployments.fake_expert:build_fake_expert_app",
        "args": {"expert": entry, "fake": fake or {}},
    }


POETRY = {
    "id": "poetry",
    "model": "org/poetry-7b",
    "skills": ["poem", "rhyme"],
    "cost": {"input_per_mtok": 0.2, "output_per_mtok": 0.2},
    "timeout_s": 2,
}


def _wait_for_models(base: str, expected: set[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            seen = {m["id"] for m in httpx.get(f"{base}/v1/models", timeout=5).json().get("data", [])}
        except (httpx.HTTPError, ValueError):
            seen = set()
        if seen == expected | {"coe"}:
            return
        time.sleep(0.3)
    raise AssertionError(f"router serves {sorted(seen)}, expected {sorted(expected)}")


def _all_replicas(apps: list[str]) -> dict[str, dict[str, str]]:
    return {app: _replica_actors(app) for app in apps}


def test_adding_and_removing_an_expert_application_changes_only_that_expert(ray_serve):
    experts = {e["id"]: e for e in config_dict()["experts"]}
    deploy_apps(ray_serve, [_router_app()] + [_expert_app(e) for e in experts.values()])
    base = f"http://127.0.0.1:8765{PREFIX}"
    _wait_for_models(base, set(experts))
    wait_healthy(ray_serve, ROUTER_APP, PREFIX)
    assert _ask(base, "please sum 2 and 3").headers["x-coe-experts"] == "math"
    kept = [ROUTER_APP, "split-math", "split-text", "split-general"]
    before = _all_replicas(kept)
    assert all(before[app] for app in kept), before

    # Add an expert: one more application in the config.
    deploy_apps(ray_serve, [_expert_app(POETRY)])
    _wait_for_models(base, set(experts) | {"poetry"})
    assert _replica_actors("split-poetry")
    asked = _ask(base, "write a poem about the sea")
    assert asked.status_code == 200 and asked.headers["x-coe-experts"] == "poetry", asked.text
    direct = httpx.post(
        f"{base}/v1/chat/completions",
        timeout=30,
        json={"model": "poetry", "messages": [{"role": "user", "content": "hello"}]},
    )
    assert direct.status_code == 200 and direct.headers["x-coe-experts"] == "poetry"
    assert _all_replicas(kept) == before, "adding an expert restarted the router or another expert"

    # Remove an expert: its application leaves the config.
    deploy_apps(ray_serve, [], remove=("split-text",))
    _wait_for_models(base, {"math", "general", "poetry"})
    gone = httpx.post(
        f"{base}/v1/chat/completions",
        timeout=30,
        json={"model": "text", "messages": [{"role": "user", "content": "reverse the word"}]},
    )
    assert_openai_error(gone, 404)
    routed = _ask(base, "reverse the word cat")
    assert routed.status_code == 200 and routed.headers["x-coe-experts"] != "text"
    still = [ROUTER_APP, "split-math", "split-general"]
    assert _all_replicas(still) == {app: before[app] for app in still}, (
        "removing an expert restarted the router or another expert"
    )
    assert _ask(base, "please sum 2 and 3").headers["x-coe-experts"] == "math"


def test_full_expert_queue_fails_fast_with_503(ray_serve):
    """Serve's bounded queue in front of an expert (max_ongoing_requests + max_queued_requests): calls
    beyond it are refused at once (Serve's BackPressureError), and the client gets a clear 503."""
    slow = dict(
        config_dict()["experts"][0],
        id="slowq",
        skills=["slowq"],
        timeout_s=30,
        max_ongoing_requests=1,
        max_queued_requests=1,
    )
    router = _router_app()
    router["name"], router["route_prefix"] = "queue", "/queue"
    router["args"]["discovery"]["app_prefix"] = "queue-"
    router["args"]["router"] = {"strategy": "keyword", "allow_fallback": False}
    expert = _expert_app(slow, {"delay_s": 2.0})
    expert["name"] = "queue-slowq"
    deploy_apps(ray_serve, [router, expert])
    base = "http://127.0.0.1:8765/queue"
    _wait_for_models(base, {"slowq"})

    import concurrent.futures as futures

    body = {"model": "slowq", "messages": [{"role": "user", "content": "hi"}]}
    with futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60), range(6)))
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert ok and refused, [r.status_code for r in replies]
    for reply in refused:
        error = assert_openai_error(reply, 503)
        assert "BackPressure" in error["message"], error


def _wait_failed(serve, name: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and str(status.status).endswith("DEPLOY_FAILED"):
            return status.message
        time.sleep(0.5)
    raise AssertionError(f"{name} did not fail: {serve.status().applications.get(name)}")


def test_bad_router_or_expert_args_fail_that_application_naming_the_field(ray_serve):
    router = _router_app()
    router["name"], router["route_prefix"] = "badrouter", "/badrouter"
    router["args"]["router"]["strategyy"] = "category"
    expert = _expert_app(dict(POETRY, resources={"num_cpus": "lots"}))
    expert["name"] = "badexpert-poetry"
    try:
        deploy_apps(ray_serve, [router, expert])
        assert "router.strategyy" in _wait_failed(ray_serve, "badrouter")
        assert "resources.num_cpus" in _wait_failed(ray_serve, "badexpert-poetry")
    finally:
        deploy_apps(ray_serve, [], remove=("badrouter", "badexpert-poetry"))


def _wait_health(base: str, done, timeout_s: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{base}/health", timeout=5)
            if done(last):
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"/health never got there: {last.text if last is not None else 'no answer'}")


def test_experts_the_router_cannot_serve_are_refused_out_loud_then_served_once_they_fit(ray_serve, tmp_path_factory):
    """A category artifact fitted on math and text cannot route among experts it has never seen. With
    only `general` deployed, the router refuses that set and says so where a client looks (/health and
    every request: 503 naming the artifact), not only in its log. Deploying `math` gives it a set it
    can serve; /health then lists `general` as deployed but not routed to by the artifact. Removing
    `math` again is refused while the router keeps the set it served; its return ends the refusal."""
    artifact = fitted_artifact(tmp_path_factory.mktemp("refuse") / "category.joblib", models=["math", "text"])
    experts = {e["id"]: e for e in config_dict()["experts"]}
    router = _router_app()
    router["name"], router["route_prefix"] = "refuse", "/refuse"
    router["args"]["router"].update(strategy="category", artifact=str(artifact))
    router["args"]["discovery"]["app_prefix"] = "refuse-"

    def expert(expert_id: str) -> dict:
        app = _expert_app(experts[expert_id])
        app["name"] = f"refuse-{expert_id}"
        return app

    base = "http://127.0.0.1:8765/refuse"
    try:
        deploy_apps(ray_serve, [router, expert("general")])
        refused = _wait_health(base, lambda r: r.status_code == 503 and "refuses" in r.text)
        assert_openai_error(refused, 503)
        message = refused.json()["error"]["message"]
        assert "['general']" in message and "router.artifact" in message, message
        asked = _ask(base, "what is 21 plus 9 sum the numbers")
        assert_openai_error(asked, 503)
        assert asked.json()["error"]["code"] == "experts_refused"

        deploy_apps(ray_serve, [expert("math")])
        served = _wait_health(base, lambda r: r.status_code == 200).json()
        assert "refused" not in served and served["status"] == "ok", served
        assert served["unrouted"] == {"category": ["general"]}
        routed = _ask(base, "what is 21 plus 9 sum the numbers")
        assert routed.status_code == 200 and routed.headers["x-coe-experts"] == "math", routed.text

        # Back to a set it cannot serve: it keeps the last one it could, and says why.
        deploy_apps(ray_serve, [], remove=("refuse-math",))
        kept = _wait_health(base, lambda r: r.status_code == 200 and "refused" in r.json()).json()
        assert kept["status"] == "degraded" and kept["refused"]["experts"] == ["general"], kept
        assert "router.artifact" in kept["refused"]["error"]
        deploy_apps(ray_serve, [expert("math")])
        healed = _wait_health(base, lambda r: r.status_code == 200 and "refused" not in r.json()).json()
        assert healed["status"] == "ok", healed
        assert _ask(base, "what is 21 plus 9 sum the numbers").headers["x-coe-experts"] == "math"
    finally:
        deploy_apps(ray_serve, [], remove=("refuse", "refuse-general", "refuse-math"))
