"""The residency coordinator of the split form takes only the discovered experts a memory budget can
hold (deployments/residency_coordinator.py). Serve's view of the expert applications is faked; the
coordinator's own code runs as it does in its replica."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from deployments.discovery import Discovered, ExpertDiscovery
from deployments.residency_coordinator import ResidencyCoordinator
from router_service.config.service import ExpertConfig, ResidencyConfig

from .helpers import config_dict

ENTRIES = {e["id"]: e for e in config_dict()["experts"]}


class EngineHandle:
    """What the coordinator calls on an expert deployment's handle: `.method.remote()`."""

    def __init__(self, loaded: bool) -> None:
        self.loaded = loaded
        self.calls: list[str] = []

    def _method(self, name: str):
        async def call() -> Any:
            self.calls.append(name)
            if name == "is_loaded":
                return self.loaded
            self.loaded = name == "load"
            return None

        return SimpleNamespace(remote=call)

    def __getattr__(self, name: str):
        if name in ("is_loaded", "load", "offload"):
            return self._method(name)
        raise AttributeError(name)


def _discovered(expert_id: str, handle: EngineHandle, **overrides: Any) -> Discovered:
    return Discovered(ExpertConfig.model_validate({**ENTRIES[expert_id], **overrides}), handle, warm=True)


@pytest.fixture
def served(monkeypatch):
    """The expert applications Serve runs, as the coordinator's discovery will find them."""
    apps: list[Discovered] = []

    async def scan(self) -> list[Discovered]:
        return list(apps)

    monkeypatch.setattr(ExpertDiscovery, "scan", scan)
    return apps


async def _coordinator() -> Any:
    settings = ResidencyConfig(max_resident_experts=1).model_dump(mode="json")
    discovery = {"app_prefix": "", "describe_timeout_s": 1.0, "interval_s": 3600.0}
    coordinator = ResidencyCoordinator.func_or_class(settings, {}, discovery=discovery)
    await coordinator._scan()
    return coordinator


def test_an_expert_with_several_replicas_is_neither_counted_nor_offloaded_under_the_budget(served):
    ids = list(ENTRIES)[:3]
    handles = {expert_id: EngineHandle(loaded=True) for expert_id in ids}
    served.extend(
        [
            _discovered(ids[0], handles[ids[0]]),
            _discovered(ids[1], handles[ids[1]], num_replicas=2),
            _discovered(ids[2], handles[ids[2]]),
        ]
    )

    async def run() -> dict[str, Any]:
        coordinator = await _coordinator()
        return await coordinator.state()

    state = asyncio.run(run())
    # Budget 1 over the two experts it can hold: the first stays, the other is offloaded.
    assert state["resident"] == [ids[0]]
    assert handles[ids[2]].calls == ["is_loaded", "offload"]
    # The two-replica expert is reported, and its engines are left alone (asking one replica whether
    # it is loaded, or offloading one, would misstate what the expert holds).
    assert handles[ids[1]].calls == []
    assert list(state["unmanaged"]) == [ids[1]]
    assert state["unmanaged"][ids[1]].startswith("num_replicas: must be 1")


def test_an_autoscaled_expert_is_left_out_until_it_is_redeployed_with_one_replica(served):
    ids = list(ENTRIES)[:2]
    first, second = EngineHandle(loaded=True), EngineHandle(loaded=True)
    served.extend(
        [
            _discovered(ids[0], first),
            _discovered(ids[1], second, autoscaling_config={"min_replicas": 1, "max_replicas": 2}),
        ]
    )

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        coordinator = await _coordinator()
        before = await coordinator.state()
        redeployed = EngineHandle(loaded=True)
        served[1] = _discovered(ids[1], redeployed)
        await coordinator._scan()
        return before, await coordinator.state()

    before, after = asyncio.run(run())
    assert before["resident"] == [ids[0]] and second.calls == []
    assert before["unmanaged"][ids[1]].startswith("autoscaling_config:")
    # One replica now: counted under the budget like the others, and nothing is reported any more.
    assert after["unmanaged"] == {}
    assert len(after["resident"]) == 1


def test_a_call_on_an_unmanaged_expert_passes_through_without_a_scan_per_call(served, monkeypatch):
    """A router still serving the set it had before the expert was redeployed with two replicas calls
    it through its old handle: the coordinator grants nothing to hold and does not rescan Serve's
    applications on every such call (the discovery interval picks up a redeploy)."""
    ids = list(ENTRIES)[:2]
    served.extend(
        [_discovered(ids[0], EngineHandle(loaded=True)), _discovered(ids[1], EngineHandle(loaded=True), num_replicas=2)]
    )

    async def run() -> tuple[dict[str, Any], int]:
        coordinator = await _coordinator()
        scans = []
        scan = coordinator._scan

        async def counted_scan() -> None:
            scans.append(1)
            await scan()

        monkeypatch.setattr(coordinator, "_scan", counted_scan)
        replies = [await coordinator.acquire(ids[1], 60.0, f"lease-{n}") for n in range(3)]
        return replies[-1], len(scans)

    reply, scans = asyncio.run(run())
    assert reply["lease"] == "" and scans == 0
