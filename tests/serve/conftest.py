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
    ray.init(num_cpus=64, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_SERVE_LOG_TO_STDERR": "0"}})
    serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    yield serve
    serve.shutdown()
    ray.shutdown()


_APPS: dict[str, dict] = {}


def deploy(serve, config_args: dict, fakes: dict[str, dict], name: str, route_prefix: str,
           deployments: list[dict] | None = None) -> str:
    """Deploy declaratively, as `serve deploy` / `serve run coe.yaml` do, so Serve applies in-place
    updates (user_config → reconfigure) exactly as it would in production."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    _APPS[name] = {"name": name, "route_prefix": route_prefix,
                   "import_path": "deployments.fake_expert:build_fake_app",
                   "args": {"config": config_args, "fakes": fakes}}
    if deployments:
        _APPS[name]["deployments"] = deployments
    client = serve_start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": list(_APPS.values())}),
                       _blocking=False)
    base = f"http://127.0.0.1:{SERVE_PORT}{route_prefix.rstrip('/')}"
    deadline = time.monotonic() + 180
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
