"""CoE Router core: route each chat request to the right expert LLM(s) behind one OpenAI-compatible API.

Ray-, vLLM- and torch-free (a test walks every module to prove it): `deployments/` adapts it to Ray
Serve and vLLM, `zoo/` builds models. Packages, one job each: `api` (HTTP edge), `serving` (request
path), `routing` (strategies, embedding, artifacts, grading), `data` (tables), `config`, `experts`
(the backend interface and its error mapping), `cli`. The names below are the public surface; they
load on first use, so `import router_service` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "RouterService": "router_service.serving.service",
    "build_service": "router_service.serving.assembly",
    "build_strategies": "router_service.serving.assembly",
    "create_app": "router_service.api.app",
    "ServiceConfig": "router_service.config.service",
    "parse_service_config": "router_service.config.service",
    "ExpertBackend": "router_service.experts.base",
    "RoutingStrategy": "router_service.routing.strategies.base",
    "get_strategy": "router_service.routing.strategies.base",
    "known_strategies": "router_service.routing.strategies.base",
    "load_artifact": "router_service.routing.artifact",
    "save_artifact": "router_service.routing.artifact",
    "make_embedder": "router_service.routing.embedding",
    "RoutingTable": "router_service.data.table",
    "load_tables": "router_service.data.loaders",
    "Query": "router_service.domain",
    "RoutingDecision": "router_service.domain",
    "CoEError": "router_service.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'router_service' has no attribute '{name}'")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
