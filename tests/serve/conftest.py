"""Real Ray Serve (local cluster) with fake experts behind the same deployment interface as vLLM's."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.unit.helpers import config_dict

SERVE_PORT = 8765


@pytest.fixture(scope="session")
def ray_serve():
    ray = pytest.importorskip("ray")
    from ray import serve

    # Logical CPUs: fake experts are cheap, and several test apps share this cluster.
    ray.init(
        num_cpus=64,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"RAY_SERVE_LOG_TO_STDERR": "0"}},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    yield serve
    serve.shutdown()
    ray.shutdown()


_APPS: dict[str, dict] = {}


def deploy_apps(serve, apps: list[dict], remove: tuple[str, ...] = ()) -> None:
    """Deploy the whole Serve config declaratively, as `serve deploy` does: these apps added or changed,
    `remove` dropped, every other app of the session kept as it is (so Serve leaves it alone)."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    for name in remove:
        _APPS.pop(name, None)
    for app in apps:
        _APPS[app["name"]] = app
    client = serve_start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": list(_APPS.values())}), _blocking=False)


def wait_healthy(serve, name: str, route_prefix: str, timeout_s: float = 180) -> str:
    base = f"http://127.0.0.1:{SERVE_PORT}{route_prefix.rstrip('/')}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and str(status.status).endswith("RUNNING"):
            try:
                if httpx.get(f"{base}/health", timeout=5).json().get("status") == "ok":
                    return base
            except (httpx.HTTPError, ValueError):
                pass
        time.sleep(0.5)
    raise RuntimeError(f"app {name} did not become healthy: {serve.status().applications.get(name)}")


def deploy(
    serve,
    config_args: dict,
    fakes: dict[str, dict],
    name: str,
    route_prefix: str,
    deployments: list[dict] | None = None,
) -> str:
    """One whole CoE in one application (`build_app` with fake experts), deployed declaratively so
    Serve applies in-place updates (user_config → reconfigure) exactly as it would in production."""
    app = {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": "deployments.fake_expert:build_fake_app",
        "args": {"config": config_args, "fakes": fakes},
    }
    if deployments:
        app["deployments"] = deployments
    deploy_apps(serve, [app])
    return wait_healthy(serve, name, route_prefix)


@pytest.fixture(scope="session")
def fake_app(ray_serve) -> str:
    args = config_dict()
    for expert in args["experts"]:
        expert["timeout_s"] = 1.5
    fakes = {"math": {}, "text": {}, "general": {}}
    return deploy(ray_serve, args, fakes, name="coe", route_prefix="/")


@pytest.fixture(scope="session")
def faulty_app(ray_serve) -> str:
    """'math' always fails, 'text' is slower than its timeout."""
    args = config_dict(allow_fallback=False)
    for expert in args["experts"]:
        expert["timeout_s"] = 1.0
    fakes = {"math": {"fail": True}, "text": {"delay_s": 3.0}, "general": {}}
    return deploy(ray_serve, args, fakes, name="faulty", route_prefix="/faulty")


def assert_answered_despite_kill(victim_results, victim: str, bystander_results, bystander: str) -> None:
    """After `victim`'s replica was killed mid-flight: the bystander's requests are untouched, every
    request for the victim got a 200, and those it could not answer name it in `routing.fallback`."""
    assert all(r.status_code == 200 for r in bystander_results)
    assert all(r.headers["x-coe-experts"] == bystander for r in bystander_results)
    for r in victim_results:
        assert r.status_code == 200, r.text  # routed requests fall back to the next-best expert
        if r.headers["x-coe-experts"] != victim:
            assert r.json()["routing"]["fallback"][0]["expert"] == victim
    assert any(r.headers["x-coe-experts"] != victim for r in victim_results), "the kill hit no request"
