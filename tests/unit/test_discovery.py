"""How the split deployment's router reads Serve's application list (no Ray: Serve's view is faked)."""

from __future__ import annotations

import asyncio

import pytest

import deployments.discovery as discovery
from deployments.discovery import ExpertApp, ExpertDiscovery
from router_service.config.service import ExpertConfig

from .helpers import config_dict

ENTRIES = {e["id"]: e for e in config_dict()["experts"]}


@pytest.fixture
def world(monkeypatch):
    """Serve's applications and what each expert says about itself, changed by the tests."""
    state = {"apps": [], "describes": {}, "described": []}
    monkeypatch.setattr(discovery, "running_expert_apps", lambda prefix="": list(state["apps"]))

    async def describe(self, app):
        state["described"].append(app.app)
        config = state["describes"].get(app.app)
        return (
            None
            if config is None
            else discovery._Known(app.deployed_at, ExpertConfig.model_validate(config), handle=app.app)
        )

    monkeypatch.setattr(ExpertDiscovery, "_describe", describe)
    return state


def _scan(finder):
    return [(d.config.id, d.handle) for d in asyncio.run(finder.scan())]


def test_running_experts_are_described_once_per_deploy(world):
    world["apps"] = [
        ExpertApp("expert-math", "expert-math", 1.0, True),
        ExpertApp("expert-text", "expert-text", 1.0, True),
    ]
    world["describes"] = {"expert-math": ENTRIES["math"], "expert-text": ENTRIES["text"]}
    finder = ExpertDiscovery()
    assert _scan(finder) == [("math", "expert-math"), ("text", "expert-text")]
    assert _scan(finder) == [("math", "expert-math"), ("text", "expert-text")]
    assert world["described"] == ["expert-math", "expert-text"]

    world["apps"] = world["apps"][:1]  # text's application was deleted
    assert _scan(finder) == [("math", "expert-math")]


def test_mid_update_keeps_the_old_description_until_the_application_is_running(world):
    world["apps"] = [ExpertApp("expert-math", "expert-math", 1.0, True)]
    world["describes"] = {"expert-math": ENTRIES["math"]}
    finder = ExpertDiscovery()
    _scan(finder)
    world["describes"] = {"expert-math": dict(ENTRIES["math"], timeout_s=9)}
    world["apps"] = [ExpertApp("expert-math", "expert-math", 2.0, False)]  # redeploying
    assert asyncio.run(finder.scan())[0].config.timeout_s == 2
    world["apps"] = [ExpertApp("expert-math", "expert-math", 2.0, True)]  # update done
    assert asyncio.run(finder.scan())[0].config.timeout_s == 9


def test_a_new_expert_is_used_only_once_running_and_described(world):
    world["apps"] = [ExpertApp("expert-math", "expert-math", 1.0, False)]
    world["describes"] = {"expert-math": ENTRIES["math"]}
    finder = ExpertDiscovery()
    assert _scan(finder) == []
    world["apps"] = [ExpertApp("expert-math", "expert-math", 1.0, True)]
    world["describes"] = {}
    assert _scan(finder) == []  # did not answer describe(): tried again next scan
    world["describes"] = {"expert-math": ENTRIES["math"]}
    assert _scan(finder) == [("math", "expert-math")]


def test_two_applications_with_one_expert_id_serve_the_first(world):
    world["apps"] = [
        ExpertApp("expert-math", "expert-math", 1.0, True),
        ExpertApp("expert-math2", "expert-math", 1.0, True),
    ]
    world["describes"] = {"expert-math": ENTRIES["math"], "expert-math2": ENTRIES["math"]}
    assert _scan(ExpertDiscovery()) == [("math", "expert-math")]
