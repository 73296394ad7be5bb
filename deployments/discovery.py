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
    warm: bool = True  # has a running replica; False: scaled to zero, Serve starts one on demand


def running_expert_apps(app_prefix: str = "") -> list[ExpertApp]:
    """Expert applications with a running replica, or healthy at zero replicas (autoscaled to zero),
    in Serve's application order."""
    from ray import serve

    found = []
    for app_name, app in serve.status().applications.items():
        if not app_name.startswith(app_prefix) or str(app.status).endswith("DELETING"):
            continue
        if len(app.deployments) != 1:
            continue  # a whole CoE in one application (build_app) is not an expert
        ((name, deployment),) = app.deployments.items()
        if not name.startswith(EXPERT_DEPLOYMENT_PREFIX):
            continue
        replicas = sum(n for state, n in deployment.replica_states.items() if str(state).endswith("RUNNING"))
        # At zero by its autoscaling config (not failed, not starting): it is served, cold.
        at_zero = not deployment.replica_states and str(deployment.status).endswith("HEALTHY")
        if replicas or at_zero:
            running = str(app.status).endswith("RUNNING")
            found.append(ExpertApp(app_name, name, app.last_deployed_time_s, running, warm=bool(replicas)))
    return found


def deployed_expert_args(app_name: str) -> dict[str, Any] | None:
    """The `experts[]` entry an expert application was deployed with, read from Serve's record of its
    config: how a cold expert describes itself without a replica (asking one would start it). Test
    doubles (`build_fake_expert_app`) wrap the entry under `expert`."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None  # raises itself when no controller runs
    details = client.get_serve_details()
    app = (details.get("applications") or {}).get(app_name) or {}
    args = (app.get("deployed_app_config") or {}).get("args")
    if not isinstance(args, dict):
        return None
    return args.get("expert", args) if isinstance(args.get("expert"), dict) else args


@dataclass
class _Known:
    deployed_at: float
    config: ExpertConfig
    handle: Any
    described_warm: bool = True  # described by a replica (False: from its deployed args, while cold)


@dataclass(frozen=True)
class Discovered:
    config: ExpertConfig
    handle: Any
    warm: bool


class ExpertDiscovery:
    def __init__(self, app_prefix: str = "", describe_timeout_s: float = 10.0) -> None:
        self.app_prefix = app_prefix
        self.describe_timeout_s = describe_timeout_s
        self._known: dict[tuple[str, str], _Known] = {}

    async def scan(self) -> list[Discovered]:
        """Every expert served (warm, or cold at zero replicas), one per expert id."""
        apps = await asyncio.to_thread(running_expert_apps, self.app_prefix)
        known: dict[tuple[str, str], _Known] = {}
        warm: dict[tuple[str, str], bool] = {}
        for app in apps:
            key = (app.app, app.deployment)
            warm[key] = app.warm
            entry = self._known.get(key)
            # Mid-update an old replica may still answer: keep what we know until the update is done.
            # A description from deployed args is replaced by the replica's own once it runs.
            fresh = entry is not None and entry.deployed_at == app.deployed_at
            if entry is not None and ((fresh and (entry.described_warm or not app.warm)) or not app.running):
                known[key] = entry
            elif app.running:
                described = await (self._describe(app) if app.warm else self._describe_cold(app))
                if described is not None:
                    known[key] = described
        self._known = known
        found: dict[str, Discovered] = {}
        for key, entry in known.items():
            if entry.config.id in found:
                log.warning(
                    "expert id '%s' of application '%s' is already served by another application; ignored",
                    entry.config.id,
                    key[0],
                )
                continue
            found[entry.config.id] = Discovered(entry.config, entry.handle, warm.get(key, True))
        return list(found.values())

    async def _describe_cold(self, app: ExpertApp) -> _Known | None:
        from ray import serve

        try:
            args = await asyncio.to_thread(deployed_expert_args, app.app)
            config = ExpertConfig.model_validate(args, context={"skip_path_checks": True})
        except Exception as exc:
            log.warning("expert application '%s' is at zero replicas and its args are unreadable: %s", app.app, exc)
            return None
        handle = serve.get_deployment_handle(app.deployment, app_name=app.app)
        return _Known(app.deployed_at, config, handle, described_warm=False)

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
