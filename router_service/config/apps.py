"""Configs of the split deployment: one Serve application per expert plus one router application.

With every expert in its own application, `serve deploy` of a config that adds, removes or changes one
expert touches only that expert's application: Serve versions each application by its own `args`.
The router application does not list the experts; it discovers the running expert applications and
composes a `ServiceConfig` from its own settings and their configs (`compose_service_config`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import Field, ValidationError

from router_service.config.gateway import GatewayConfig
from router_service.config.service import (
    AggregationConfig,
    ExpertConfig,
    ResidencyConfig,
    RouterConfig,
    RouterDeploymentConfig,
    RouterFitConfig,
    ServerConfig,
    ServiceConfig,
    _Strict,
    expert_references,
    format_validation_error,
    parse_service_config,
)
from router_service.errors import ConfigError

log = logging.getLogger("coe.config")


class DiscoveryConfig(_Strict):
    app_prefix: str = Field(
        default="",
        description="Only applications whose name starts with this hold experts (several CoE services on one cluster).",
    )
    interval_s: float = Field(default=2.0, gt=0.0, description="How often the router looks for expert applications.")
    describe_timeout_s: float = Field(
        default=10.0, gt=0.0, description="How long a new expert may take to describe itself."
    )


class RouterAppConfig(_Strict):
    """`args` of the router application (`import_path: deployments.app:build_router_app`)."""

    router: RouterConfig = Field(default_factory=RouterConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    router_deployment: RouterDeploymentConfig = Field(default_factory=RouterDeploymentConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    residency: ResidencyConfig = Field(
        default_factory=ResidencyConfig,
        description="Memory budget over the discovered expert applications (set `start_loaded: false` on "
        "the experts beyond it, so start-up stays within memory).",
    )
    fit: RouterFitConfig | None = Field(
        default=None, description="Fit the artifacts on the built experts' measured quality at start-up."
    )


def parse_router_app_config(args: dict[str, Any] | RouterAppConfig) -> RouterAppConfig:
    if isinstance(args, RouterAppConfig):
        return args
    if isinstance(args, dict) and "experts" in args:
        raise ConfigError(
            "Invalid router application args: experts: not allowed here; each expert is its own application"
        )
    try:
        return RouterAppConfig.model_validate(args or {})
    except ValidationError as exc:
        raise ConfigError("Invalid router application args:\n" + format_validation_error(exc)) from None


def parse_expert_app_config(args: dict[str, Any] | ExpertConfig) -> ExpertConfig:
    if isinstance(args, ExpertConfig):
        return args
    try:
        return ExpertConfig.model_validate(args or {})
    except ValidationError as exc:
        raise ConfigError("Invalid expert application args:\n" + format_validation_error(exc)) from None


def dangling_references(app: RouterAppConfig, expert_ids: Sequence[str]) -> dict[str, str]:
    """Router settings that name an expert that is not deployed: field → expert id."""
    known = set(expert_ids)
    refs = expert_references(app.router, app.aggregation)
    return {field: expert_id for field, expert_id in refs.items() if expert_id not in known}


def compose_service_config(
    app: RouterAppConfig, experts: Sequence[ExpertConfig], strict: bool = False
) -> tuple[ServiceConfig, dict[str, str]]:
    """The ServiceConfig the router serves with these experts deployed.

    A setting that names an expert which is not deployed (yet, or any more) is dropped and returned, so
    the router keeps serving and reports it in /health; `strict` raises instead (offline config check).
    """
    if not experts:
        raise ConfigError("no expert applications are deployed")
    dangling = dangling_references(app, [e.id for e in experts])
    if strict and dangling:
        lines = [
            f"  {field}: '{expert_id}' is not a deployed expert application" for field, expert_id in dangling.items()
        ]
        raise ConfigError("Invalid router application args:\n" + "\n".join(lines))
    # Only what was written: the composed config must know which router settings the user set, so that
    # defaults never override what a loaded artifact was fitted with (`RouterConfig.strategy_settings`).
    data = app.model_dump(mode="json", exclude={"discovery", "fit"}, exclude_unset=True)
    router, aggregation = data.setdefault("router", {}), data.setdefault("aggregation", {})
    if "router.default_expert" in dangling:
        router["default_expert"] = None
    if "category_map" in router:
        router["category_map"] = {
            c: e for c, e in router["category_map"].items() if f"router.category_map.{c}" not in dangling
        }
    if "rules" in router:
        router["rules"] = [r for i, r in enumerate(router["rules"]) if f"router.rules[{i}].expert" not in dangling]
    if "router.skill_annotator.expert" in dangling:
        router["skill_annotator"] = None  # the embedding annotator runs; /health reports the setting
    if "aggregation.aggregator" in dangling:
        aggregation["aggregator"] = None
        if aggregation.get("method") == "synthesize":
            aggregation["method"] = "vote"  # no writer deployed: merge by vote rather than fail every request
    # What each expert set, so a re-validation sees the same choices (e.g. autoscaling without num_replicas).
    data["experts"] = [e.model_dump(mode="json", exclude_unset=True) for e in experts]
    return parse_service_config(data, skip_path_checks=not strict), dangling


def check_fit_matches_experts(app: RouterAppConfig, experts: Sequence[ExpertConfig]) -> None:
    """The router's `fit.experts` must place and price each expert as its own application does: the
    routers are fitted on what that model measured, at that price."""
    if app.fit is None:
        return
    deployed = {e.id: e for e in experts}
    for expert_id, source in app.fit.experts.items():
        expert = deployed.get(expert_id)
        if expert is None:
            raise ConfigError(f"  fit.experts.{expert_id}: no expert application with this id")
        for field in ("model", "build", "cost"):
            if getattr(source, field) != getattr(expert, field):
                raise ConfigError(
                    f"  fit.experts.{expert_id}.{field}: {getattr(source, field)!r} differs from the "
                    f"expert application's {field} {getattr(expert, field)!r}"
                )
