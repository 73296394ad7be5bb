"""Read a Ray Serve config file (coe.yaml) and validate what it deploys, across its applications.

This is the one place that knows Serve's file shape and the names of this package's application
builders; the core (`router_service.config`) validates each application's `args` only.
`python -m deployments.serve_config deployments/coe.yaml` checks a file before `serve deploy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router_service.config.apps import (
    check_fit_matches_experts,
    compose_service_config,
    parse_expert_app_config,
    parse_router_app_config,
)
from router_service.config.service import ServiceConfig, parse_service_config
from router_service.errors import ConfigError

ROUTER_APP_BUILDER = "build_router_app"
EXPERT_APP_BUILDER = "build_expert_app"


def _builder_name(app: dict[str, Any]) -> str:
    return str(app.get("import_path", "")).rsplit(":", 1)[-1]


def service_config_from_serve_config(data: dict[str, Any], source: str = "config") -> ServiceConfig:
    """The ServiceConfig a Serve config (coe.yaml) deploys, validated across all its applications."""
    apps = (data or {}).get("applications") or []
    routers = [(i, a) for i, a in enumerate(apps) if _builder_name(a) == ROUTER_APP_BUILDER]
    if not routers:
        for app in apps:
            if _builder_name(app) == "build_app":
                return parse_service_config(app.get("args") or {})
        raise ConfigError(f"{source}: no CoE application (deployments.app:build_app or build_router_app) found")
    index, router_app = routers[0]

    def at(i: int, exc: ConfigError) -> ConfigError:
        body = exc.message.split("\n", 1)[-1] if "\n" in exc.message else "  " + exc.message
        return ConfigError(f"{source}: applications[{i}] ({apps[i].get('name')}).args:\n{body}")

    try:
        app_config = parse_router_app_config(router_app.get("args") or {})
    except ConfigError as exc:
        raise at(index, exc) from None
    experts = []
    for i, app in enumerate(apps):
        if _builder_name(app) == EXPERT_APP_BUILDER:
            try:
                experts.append(parse_expert_app_config(app.get("args") or {}))
            except ConfigError as exc:
                raise at(i, exc) from None
    try:
        config, _ = compose_service_config(app_config, experts, strict=True)
        check_fit_matches_experts(app_config, experts)
    except ConfigError as exc:
        raise at(index, exc) from None
    return config


def load_serve_config(path: str | Path) -> ServiceConfig:
    """Read a Ray Serve config file (coe.yaml) and validate what it deploys, across applications."""
    import yaml

    return service_config_from_serve_config(yaml.safe_load(Path(path).read_text()), str(path))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m deployments.serve_config deployments/coe.yaml`: check a Serve config before deploying it."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("config", help="Ray Serve config file, e.g. deployments/coe.yaml")
    path = parser.parse_args(argv).config
    try:
        config = load_serve_config(path)
    except ConfigError as exc:
        print(exc.message)
        return 1
    print(f"{path}: ok — experts {', '.join(config.expert_ids)}; strategy {config.router.strategy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
