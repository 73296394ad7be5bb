"""The split form's router builds its service for the router settings current when the build ends
(deployments/router.py). A `serve deploy` of new router settings can land while the router is building
for a newly discovered set of expert applications; the settings that won are the ones served, and a
set they cannot serve is refused out loud whichever build found it. Serve's view is faked; the
router's own code runs as in its replica."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deployments.discovery import Discovered, ExpertDiscovery
from deployments.router import RouterDeployment
from router_service.config.service import ExpertConfig
from router_service.errors import ExpertUnavailableError

from .helpers import config_dict
from .routing_fixtures import fitted_artifact

ENTRIES = {e["id"]: e for e in config_dict()["experts"]}
# The class Serve's ingress wraps: constructed here without a Serve replica around it.
RouterClass = RouterDeployment.func_or_class.__mro__[1]


@pytest.fixture(autouse=True)
def nothing_served_in_the_background(monkeypatch):
    async def scan(self) -> list[Discovered]:
        return []

    monkeypatch.setattr(ExpertDiscovery, "scan", scan)


def _router() -> Any:
    args = {k: v for k, v in config_dict().items() if k not in ("experts", "router")}
    return RouterClass(args, {}, discovery={"interval_s": 3600.0, "app_prefix": "split-"})


def _found(*expert_ids: str) -> list[Discovered]:
    return [Discovered(ExpertConfig.model_validate(ENTRIES[e]), handle=object(), warm=True) for e in expert_ids]


def _reconfigured_during_the_next_build(router: Any, settings: dict[str, Any]) -> None:
    """The next build for a discovered set sees `serve deploy` apply `settings` while it runs."""
    build = router._build
    pending = [settings]

    def build_then_reconfigure(*args: Any):
        built = build(*args)
        if pending:
            router.reconfigure({"router": pending.pop()})
        return built

    router._build = build_then_reconfigure


def test_settings_deployed_during_a_build_are_the_ones_served():
    async def run() -> Any:
        router = _router()
        router.reconfigure({"router": config_dict()["router"]})
        _reconfigured_during_the_next_build(router, config_dict(default_expert="math")["router"])
        await router._apply_discovered(_found("math", "text", "general"))
        return router

    router = asyncio.run(run())
    assert router.service.config.router.default_expert == "math"
    assert router.service.config.expert_ids == ["math", "text", "general"]
    assert router.refused is None


def test_settings_deployed_during_a_build_that_cannot_serve_the_set_refuse_it_out_loud(tmp_path):
    # Fitted on math and text only: it cannot route a set of which it knows none.
    artifact = fitted_artifact(tmp_path / "category.joblib", models=["math", "text"])

    async def run() -> Any:
        router = _router()
        router.reconfigure({"router": config_dict()["router"]})
        _reconfigured_during_the_next_build(router, config_dict(strategy="category", artifact=str(artifact))["router"])
        await router._apply_discovered(_found("general"))
        return router

    router = asyncio.run(run())
    assert router.refused is not None and router.refused["experts"] == ["general"]
    assert "router.artifact" in router.refused["error"]
    with pytest.raises(ExpertUnavailableError) as refused:
        router._current_service()
    assert refused.value.code == "experts_refused"
