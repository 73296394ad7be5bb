"""The router ingress: a RouterService over handles to the expert deployments, served with FastAPI.

Router settings arrive as Serve `user_config`, so `serve deploy` with new routing parameters calls
`reconfigure` on the running replicas — no restart of the router, none of the experts.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from deployments.metrics import RayServeMetrics
from deployments.ray_backend import RayExpertBackend
from router_service.assembly import build_service
from router_service.config import parse_service_config
from router_service.http import create_app

log = logging.getLogger("coe.router")


@serve.deployment
@serve.ingress()
class RouterDeployment:
    def __init__(self, config: dict[str, Any], handles: dict[str, Any],
                 router: dict[str, Any] | None = None) -> None:
        self.base_config = dict(config)
        self.metrics = RayServeMetrics()
        self.backends = {expert_id: RayExpertBackend(expert_id, handle) for expert_id, handle in handles.items()}
        self.config = parse_service_config({**self.base_config, "router": router or {}})
        # Serve calls reconfigure(user_config) right after __init__ when user_config is set.
        self.service = build_service(self.config, self.backends, metrics=self.metrics) if router else None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        router = (user_config or {}).get("router")
        if router is None or (self.service is not None
                              and router == self.config.router.model_dump(mode="json")):
            return
        config = parse_service_config({**self.base_config, "router": router})
        self.service = build_service(config, self.backends, metrics=self.metrics)
        self.config = config
        log.info("router reconfigured: strategy=%s artifact=%s cost_weight=%s", config.router.strategy,
                 config.router.artifact, config.router.cost_weight)

    def __serve_build_asgi_app__(self):
        return create_app(lambda: self.service, self.config.server, self.metrics)
