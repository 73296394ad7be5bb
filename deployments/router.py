"""The router ingress: builds a RouterService over handles to the expert deployments and serves it with FastAPI."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.ray_backend import RayExpertBackend
from router_service.assembly import build_service
from router_service.config import parse_service_config
from router_service.http import create_app


@serve.deployment
@serve.ingress()
class RouterDeployment:
    def __init__(self, config: dict[str, Any], handles: dict[str, Any]) -> None:
        self.config = parse_service_config(config)
        backends = {expert_id: RayExpertBackend(expert_id, handle) for expert_id, handle in handles.items()}
        self.service = build_service(self.config, backends)

    def __serve_build_asgi_app__(self):
        return create_app(lambda: self.service, max_body_bytes=self.config.server.max_body_bytes)
