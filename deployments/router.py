"""The router ingress: a RouterService over handles to the expert deployments, served with FastAPI.

Router settings arrive as Serve `user_config`, so `serve deploy` with new routing parameters calls
`reconfigure` on the running replicas — no restart of the router, none of the experts.

In the split deployment (`build_router_app`) the router gets no handles: it discovers the expert
applications and rebuilds its service when one is added, removed or redeployed, without restarting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from deployments.discovery import Discovered, ExpertDiscovery
from deployments.metrics import RayServeMetrics
from deployments.ray_backend import RayExpertBackend
from deployments.residency_coordinator import RayCoordinator
from router_service.api.app import create_app
from router_service.config.apps import RouterAppConfig, compose_service_config
from router_service.config.service import ExpertConfig, RouterConfig, parse_service_config
from router_service.errors import ConfigError, ExpertUnavailableError
from router_service.serving.activity import ActivityLog, TeeMetrics
from router_service.serving.assembly import build_service, configured_embedder
from router_service.serving.residency import Residency
from router_service.serving.shared_residency import SharedResidency

log = logging.getLogger("coe.router")


class ReplicaHeader:
    """Names the router replica that answered (`x-coe-replica`): which one a client reached, when
    replicas must agree (per-key counters) or a request is traced. A plain ASGI wrapper: no per-request
    task, unlike Starlette's `BaseHTTPMiddleware`."""

    def __init__(self, app, replica: str) -> None:
        self.app = app
        self.header = (b"x-coe-replica", replica.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


@serve.deployment
@serve.ingress()
class RouterDeployment:
    def __init__(
        self,
        config: dict[str, Any],
        handles: dict[str, Any],
        discovery: dict[str, Any] | None = None,
        residency: Any = None,
    ) -> None:
        self.base_config = dict(config)
        # Every hook reaches Prometheus and this replica's in-memory log behind /dashboard.
        self.activity = ActivityLog()
        self.metrics = TeeMetrics(RayServeMetrics(), self.activity)
        self.backends = {expert_id: RayExpertBackend(expert_id, handle) for expert_id, handle in handles.items()}
        self.router: dict[str, Any] | None = None
        self.experts: list[ExpertConfig] = []
        self.service = None
        self._embedders: dict[tuple[str, str, str | None], Any] = {}
        self._discovery_task = None
        self._residency: SharedResidency | None = None
        self._coordinator = RayCoordinator(residency) if residency is not None else None
        self.cold: set[str] = set()  # experts discovered at zero replicas (autoscaled to zero)
        # The discovered experts the router's settings cannot serve (split form), and why: kept out of
        # the service, reported by /health, and not rebuilt again until the set or the settings change.
        self.refused: dict[str, Any] | None = None
        self._refused_experts: list[ExpertConfig] | None = None
        if discovery is not None:
            self.app_config = RouterAppConfig.model_validate({**self.base_config, "discovery": discovery})
            self.server = self.app_config.server
            self.gateway = self.app_config.gateway
            self._discovery_task = asyncio.get_running_loop().create_task(self._discover_forever())
        else:
            parsed = parse_service_config({**self.base_config, "router": {}})
            self.server, self.gateway = parsed.server, parsed.gateway

    # -- configuration ------------------------------------------------------------------------
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        router = (user_config or {}).get("router")
        if router is None or router == self.router:
            return
        service = self._build(router, self.experts, self.backends)
        self.router = router
        self._refused_experts = None  # new settings may serve the refused set: the next scan retries it
        self._install(service)
        log.info("router reconfigured: %s", {k: router.get(k) for k in ("strategy", "artifact", "cost_weight")})

    def _build(self, router: dict[str, Any], experts: list[ExpertConfig], backends: dict[str, Any]):
        if self._discovery_task is None:
            config = parse_service_config({**self.base_config, "router": router})
            return build_service(
                config,
                backends,
                embedder_factory=self._embedder_factory(config.router),
                metrics=self.metrics,
                residency=self._residency_for(config, backends),
            ), {}
        app = self.app_config.model_copy(update={"router": self.app_config.router.model_validate(router)})
        if not experts:
            return None, {}  # nothing to route to yet; the first discovered expert builds the service
        config, unresolved = compose_service_config(app, experts)
        factory = self._embedder_factory(config.router)
        residency = self._residency_for(config, backends)
        service = build_service(config, backends, embedder_factory=factory, metrics=self.metrics, residency=residency)
        return service, unresolved

    def _residency_for(self, config, backends: dict[str, Any]) -> Residency | None:
        """Under a budget, leases from the application's one coordinator: it alone loads and offloads,
        so the budget holds across router replicas and survives every rebuilt service (reconfigure).
        Without a budget, the service's own manager (everything stays loaded)."""
        settings = config.residency
        if self._coordinator is None or settings.max_resident_experts is None:
            return None
        if self._residency is None or list(backends) != self._residency.managed:
            # A new set of discovered experts: a fresh view (its counters restart; the truth is the
            # coordinator's).
            self._residency = SharedResidency(
                self._coordinator,
                managed=list(backends),
                budget=settings.max_resident_experts,
                wait_timeout_s=settings.wait_timeout_s,
                lease_ttl_s=settings.lease_ttl_s,
            )
        return self._residency

    def _install(self, built) -> None:
        service, unresolved = built
        if service is not None:
            service.unresolved = unresolved
            service.cold = set(self.cold)
            service.refused = self.refused
            if unresolved:
                log.warning("router settings name experts that are not deployed: %s", unresolved)
        self.service = service

    def _embedder_factory(self, router: RouterConfig):
        def embedder(name: str):
            # Kept across rebuilds: a new expert must not cost a reload of the embedding model.
            key = (name, router.embedder_backend, router.embedder_path)
            if key not in self._embedders:
                self._embedders[key] = configured_embedder(name, router)
            return self._embedders[key]

        return embedder

    # -- discovery ----------------------------------------------------------------------------
    async def _discover_forever(self) -> None:

        settings = self.app_config.discovery
        discovery = ExpertDiscovery(settings.app_prefix, settings.describe_timeout_s)
        while True:
            try:
                await self._apply_discovered(await discovery.scan())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expert discovery failed; keeping the current experts")
            await asyncio.sleep(settings.interval_s)

    async def _apply_discovered(self, found: list[Discovered]) -> None:
        # Which experts are at zero replicas changes often and costs no rebuild.
        self.cold = {d.config.id for d in found if not d.warm}
        if self.service is not None:
            self.service.cold = set(self.cold)
        experts = [d.config for d in found]
        if experts == self.experts:
            if self.refused is not None:  # back to the set it serves (the refused application is gone)
                self._set_refused(None)
            return
        if experts == self._refused_experts:
            return  # refused already; retried when the set or the router's settings change
        backends = {d.config.id: RayExpertBackend(d.config.id, d.handle) for d in found}
        try:
            built = await self._build_for_current_settings(experts, backends)
        except ConfigError as exc:
            self._set_refused(experts, exc)
            return
        self._set_refused(None)
        before = {e.id for e in self.experts}
        self.experts, self.backends = experts, backends
        if built is not None:
            self._install(built)
        now = {e.id for e in experts}
        log.info("experts now %s (added %s, removed %s)", sorted(now), sorted(now - before), sorted(before - now))

    async def _build_for_current_settings(self, experts: list[ExpertConfig], backends: dict[str, Any]):
        """The service for these experts under the router settings current when the build ends (None
        before the first settings arrive). Built off the event loop, so loading artifacts does not stall
        requests in flight; a reconfigure meanwhile is built again, and either build's ConfigError
        reaches the caller."""
        while (router := self.router) is not None:
            built = await asyncio.to_thread(self._build, router, experts, backends)
            if self.router is router:
                return built
        return None

    def _set_refused(self, experts: list[ExpertConfig] | None, exc: ConfigError | None = None) -> None:
        """The router's settings cannot serve this set of expert applications (an artifact fitted on
        none of them, an expert sized against the memory budget): keep serving the last set it could,
        and say so in /health. `experts=None`: nothing is refused any more."""
        self._refused_experts = experts
        self.refused = None if experts is None else {"experts": [e.id for e in experts], "error": str(exc)}
        if self.refused is not None:
            log.error(
                "router refuses the deployed experts %s and keeps serving %s: %s",
                self.refused["experts"],
                [e.id for e in self.experts],
                exc,
            )
        if self.service is not None:
            self.service.refused = self.refused

    # -- HTTP ---------------------------------------------------------------------------------
    def _current_service(self):
        if self.service is None:
            if self.refused is not None:
                raise ExpertUnavailableError(
                    f"the router refuses the deployed experts {self.refused['experts']}: {self.refused['error']}",
                    code="experts_refused",
                )
            raise ExpertUnavailableError("no expert application is running yet")
        return self.service

    def __serve_build_asgi_app__(self):
        app = create_app(self._current_service, self.server, self.metrics, gateway=self.gateway, activity=self.activity)
        app.add_middleware(ReplicaHeader, replica=serve.get_replica_context().replica_id.unique_id)
        return app

    def __del__(self) -> None:
        if self._discovery_task is not None:
            self._discovery_task.cancel()
