"""Finds the expert applications a split deployment's router serves.

An expert application is one whose only deployment is named `expert-*` (what `build_expert_app` makes)
and has a running replica. Each describes itself (its `experts[]` config entry) once per deploy.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from router_service.config.service import ExpertConfig

log = logging.getLogger("coe.discovery")

EXPERT_DEPLOYMENT_PREFIX = "expert-"


@dataclass(frozen=True)
class ExpertApp:
    app: str
    deployment: str
    deployed_at: float  # the application's last deploy: a redeployed expert is described afresh
    running: bool  # the whole application is RUNNING (not mid-update, not recovering)


def running_expert_apps(app_prefix: str = "") -> list[ExpertApp]:
    """Expert applications with at least one running replica, in Serve's application order."""
    from ray import serve

    found = []
    for app_name, app in serve.status().applications.items():
        if not app_name.startswith(app_prefix) or str(app.status).endswith("DELETING"):
            continue
        if len(app.deployments) != 1:
            continue  # a whole CoE in one application (build_app) is not an expert
        ((name, deployment),) = app.deployments.items()
        replicas = sum(n for state, n in deployment.replica_states.items() if str(state).endswith("RUNNING"))
        if name.startswith(EXPERT_DEPLOYMENT_PREFIX) and replicas:
            found.append(ExpertApp(app_name, name, app.last_deployed_time_s, str(app.status).endswith("RUNNING")))
    return found


@dataclass
class _Known:
    deployed_at: float
    config: ExpertConfig
    handle: Any


class ExpertDiscovery:
    def __init__(self, app_prefix: str = "", describe_timeout_s: float = 10.0) -> None:
        self.app_prefix = app_prefix
        self.describe_timeout_s = describe_timeout_s
        self._known: dict[tuple[str, str], _Known] = {}

    async def scan(self) -> list[tuple[ExpertConfig, Any]]:
        """(config, handle) of every running expert, one per expert id."""
        apps = await asyncio.to_thread(running_expert_apps, self.app_prefix)
        known: dict[tuple[str, str], _Known] = {}
        for app in apps:
            key = (app.app, app.deployment)
            entry = self._known.get(key)
            # Mid-update an old replica may still answer: keep what we know until the update is done.
            if entry is not None and (entry.deployed_at == app.deployed_at or not app.running):
                known[key] = entry
            elif app.running:
                described = await self._describe(app)
                if described is not None:
                    known[key] = described
        self._known = known
        found: dict[str, tuple[ExpertConfig, Any]] = {}
        for (app_name, _), entry in known.items():
            if entry.config.id in found:
                log.warning(
                    "expert id '%s' of application '%s' is already served by another application; ignored",
                    entry.config.id,
                    app_name,
                )
                continue
            found[entry.config.id] = (entry.config, entry.handle)
        return list(found.values())

    async def _describe(self, app: ExpertApp) -> _Known | None:
        from ray import serve

        handle = serve.get_deployment_handle(app.deployment, app_name=app.app)
        try:
            described = await asyncio.wait_for(handle.describe.remote(), self.describe_timeout_s)
            # Its model files live on its own node; the expert checked them when it was built.
            return _Known(
                app.deployed_at, ExpertConfig.model_validate(described, context={"skip_path_checks": True}), handle
            )
        except Exception as exc:
            log.warning("expert application '%s' did not describe itself: %s", app.app, exc)
            return None
