"""Build the routing side of a RouterService from config: strategies, artifacts, embedder.

Shared by the Ray router deployment and by tests, so both start the service the same way.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from router_service.config.service import RouterConfig, ServiceConfig
from router_service.routing.embedding import Embedder, make_embedder
from router_service.errors import ConfigError
from router_service.experts.base import ExpertBackend
from router_service.serving.metrics import Metrics
from router_service.serving.service import RouterService
from router_service.routing.strategies.base import RoutingStrategy, strategy_class
from router_service.routing.strategies.rules import FixedStrategy, KeywordStrategy

log = logging.getLogger("coe.router")


def _constructor_params(strategy: RoutingStrategy) -> set[str]:
    return {name for name in inspect.signature(type(strategy).__init__).parameters if name != "self"}


def apply_router_settings(strategy: RoutingStrategy, config: ServiceConfig) -> None:
    """Push config values onto a (possibly loaded) strategy, for the parameters it declares."""
    router = config.router
    settings: dict[str, Any] = {
        "default_expert": router.default_expert,
        "cost_weight": router.cost_weight,
        "confidence_threshold": router.confidence_threshold,
        "top_k": router.top_k,
    }
    if router.category_map:
        settings["category_map"] = dict(router.category_map)
    settings.update(router.params)
    accepted = _constructor_params(strategy)
    for key, value in settings.items():
        if key in accepted:
            setattr(strategy, key, value)
        elif key in router.params:
            raise ConfigError(f"router.params.{key}: strategy '{strategy.name}' has no parameter '{key}'")


def _artifact_fields(router: RouterConfig) -> list[tuple[str, str]]:
    fields = [("router.artifact", router.artifact)] if router.artifact else []
    return fields + [(f"router.extra_artifacts[{i}]", path) for i, path in enumerate(router.extra_artifacts)]


def _load_artifact(path: str, field: str) -> RoutingStrategy:
    from router_service.routing.artifact import load_artifact

    if not Path(path).exists():
        raise ConfigError(f"{field}: file '{path}' does not exist (fit one with `python -m router_service.cli.fit`)")
    try:
        return load_artifact(path)
    except ConfigError as exc:
        raise ConfigError(f"{field}: {exc.message}") from None


def _check_strategy_names(router: RouterConfig, fitted: list[str]) -> None:
    if router.artifact and router.strategy not in fitted:
        raise ConfigError(f"router.strategy: '{router.strategy}' but router.artifact holds '{fitted[0]}'")
    if router.strategy not in fitted and strategy_class(router.strategy).learned:
        raise ConfigError(f"router.artifact: strategy '{router.strategy}' is learned and needs a fitted "
                          "artifact (python -m router_service.cli.fit)")


def check_artifacts(router: RouterConfig) -> None:
    """Every artifact loads and matches `router.strategy`; which experts it covers is checked once the
    experts are known (the router application discovers them after it starts)."""
    _check_strategy_names(router, [_load_artifact(path, field).name for field, path in _artifact_fields(router)])


def load_strategy_artifact(path: str, config: ServiceConfig, embedder_for: Callable[[str], Embedder],
                           field: str = "router.artifact") -> RoutingStrategy:
    from router_service.routing.artifact import expert_mismatch

    strategy = _load_artifact(path, field)
    if strategy.embedder is not None:
        # Strategies fitted with the same embedder share one loaded model.
        strategy.set_embedder(embedder_for(strategy.embedder.name))
    mismatch = expert_mismatch(strategy, config.expert_ids)
    removed, added = mismatch["missing"], mismatch["unknown"]
    if removed:
        log.warning("%s was fitted with experts %s that are not configured; their prompts go to the next-best "
                    "configured expert and responses say so", path, removed)
    if added:
        log.warning("experts %s are configured but %s was not fitted on them: they are not routed to until "
                    "the artifact is refitted", added, path)
    if not set(strategy.fitted_experts or config.expert_ids) & set(config.expert_ids):
        raise ConfigError(f"{field}: '{path}' was fitted on experts {strategy.fitted_experts}, none of which "
                          f"is configured ({config.expert_ids})")
    return strategy


def build_strategies(config: ServiceConfig,
                     embedder_factory: Callable[[str], Embedder] = make_embedder) -> dict[str, RoutingStrategy]:
    router = config.router
    embedders: dict[str, Embedder] = {}

    def embedder_for(name: str) -> Embedder:
        if name not in embedders:
            embedders[name] = embedder_factory(name)
        return embedders[name]

    strategies: dict[str, RoutingStrategy] = {}
    fitted = []
    for field, path in _artifact_fields(router):
        strategy = load_strategy_artifact(path, config, embedder_for, field)
        apply_router_settings(strategy, config)
        strategies[strategy.name] = strategy
        fitted.append(strategy.name)
    _check_strategy_names(router, fitted)
    rules = {}
    for rule in router.rules:
        rules.setdefault(rule.expert, []).extend(rule.keywords)
    simple: dict[str, RoutingStrategy] = {
        "fixed": FixedStrategy(expert=router.default_expert),
        "keyword": KeywordStrategy(rules=rules, default_expert=router.default_expert),
    }
    for name, strategy in simple.items():
        strategy.top_k = router.top_k
        strategies.setdefault(name, strategy)
    if router.strategy not in strategies:
        strategy = strategy_class(router.strategy)()
        apply_router_settings(strategy, config)
        strategies[router.strategy] = strategy
    return strategies


def build_service(config: ServiceConfig, backends: Mapping[str, ExpertBackend],
                  embedder_factory: Callable[[str], Embedder] = make_embedder,
                  metrics: Metrics | None = None) -> RouterService:
    return RouterService(config, backends, build_strategies(config, embedder_factory), metrics=metrics)
