"""Build the routing side of a RouterService from config: strategies, artifacts, embedder.

Shared by the Ray router deployment and by tests, so both start the service the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from router_service.config.service import RouterConfig, ServiceConfig
from router_service.errors import ConfigError, UnknownParameterError
from router_service.experts.base import ExpertBackend
from router_service.routing.embedding import Embedder, embedder_keep, make_embedder
from router_service.routing.strategies.base import RoutingStrategy, strategy_class
from router_service.routing.strategies.rules import FixedStrategy, KeywordStrategy
from router_service.serving.metrics import Metrics
from router_service.serving.residency import Residency
from router_service.serving.service import RouterService

log = logging.getLogger("coe.router")


def apply_router_settings(
    strategy: RoutingStrategy, config: ServiceConfig, *, written_only: bool = True
) -> RoutingStrategy:
    """Set the router config's strategy parameters on `strategy`, through `set_params` (the one door).

    `written_only` (the default, for a loaded artifact): only the settings the user wrote in the config
    override it, so values fitted into the artifact (`cli.fit --param cost_weight=0.2`) survive config
    defaults. A router setting the strategy does not declare (e.g. `cost_weight` for `category`) is
    skipped; a `router.params` key it does not declare is a ConfigError.
    """
    router = config.router
    accepted = set(strategy.param_names())
    settings = {
        key: value
        for key, value in router.strategy_settings(written_only=written_only).items()
        if key in accepted or key in router.params
    }
    try:
        return strategy.set_params(**settings)
    except UnknownParameterError as exc:
        key = exc.names[0]
        raise ConfigError(f"router.params.{key}: strategy '{strategy.name}' has no parameter '{key}'") from None


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
        raise ConfigError(
            f"router.artifact: strategy '{router.strategy}' is learned and needs a fitted "
            "artifact (python -m router_service.cli.fit)"
        )


def check_artifacts(router: RouterConfig) -> None:
    """Every artifact loads and matches `router.strategy`; which experts it covers is checked once the
    experts are known (the router application discovers them after it starts)."""
    _check_strategy_names(router, [_load_artifact(path, field).name for field, path in _artifact_fields(router)])


def load_strategy_artifact(
    path: str, config: ServiceConfig, embedder_for: Callable[[str, str], Embedder], field: str = "router.artifact"
) -> RoutingStrategy:
    from router_service.routing.artifact import expert_mismatch

    strategy = _load_artifact(path, field)
    if strategy.embedder is not None:
        # Strategies fitted with the same embedder (and kept end) share one loaded model.
        strategy.set_embedder(embedder_for(strategy.embedder.name, embedder_keep(strategy.embedder)))
    mismatch = expert_mismatch(strategy, config.expert_ids)
    removed, added = mismatch["missing"], mismatch["unknown"]
    if removed:
        log.warning(
            "%s was fitted with experts %s that are not configured; their prompts go to the next-best "
            "configured expert and responses say so",
            path,
            removed,
        )
    if added:
        log.warning(
            "experts %s are configured but %s was not fitted on them: they are not routed to until "
            "the artifact is refitted",
            added,
            path,
        )
    if not set(strategy.fitted_experts or config.expert_ids) & set(config.expert_ids):
        raise ConfigError(
            f"{field}: '{path}' was fitted on experts {strategy.fitted_experts}, none of which "
            f"is configured ({config.expert_ids})"
        )
    return strategy


def configured_embedder(name: str, router: RouterConfig) -> Embedder:
    """The embedder called `name` (as an artifact records it), run by `router.embedder_backend`."""
    exported = router.embedder_backend != "torch"
    try:
        return make_embedder(name, backend=router.embedder_backend, path=router.embedder_path if exported else None)
    except ValueError as exc:
        raise ConfigError(f"router.embedder_backend: {exc}") from None


def build_strategies(
    config: ServiceConfig, embedder_factory: Callable[[str], Embedder] | None = None
) -> dict[str, RoutingStrategy]:
    router = config.router
    if embedder_factory is None:
        embedder_factory = partial(configured_embedder, router=router)
    embedders: dict[tuple[str, str], Embedder] = {}

    def embedder_for(name: str, keep: str = "head") -> Embedder:
        if (name, keep) not in embedders:
            embedder = embedder_factory(name)
            if embedder_keep(embedder) != keep:
                if not hasattr(embedder, "with_keep"):
                    raise ConfigError(f"router.artifact: embedder '{name}' cannot embed the {keep} of long prompts")
                embedder = embedder.with_keep(keep)
            embedders[(name, keep)] = embedder
        return embedders[(name, keep)]

    strategies: dict[str, RoutingStrategy] = {}
    fitted = []
    for field, path in _artifact_fields(router):
        strategy = load_strategy_artifact(path, config, embedder_for, field)
        apply_router_settings(strategy, config)
        strategies[strategy.name] = strategy
        fitted.append(strategy.name)
    _check_strategy_names(router, fitted)
    rules: dict[str, list[str]] = {}
    for rule in router.rules:
        rules.setdefault(rule.expert, []).extend(rule.keywords)
    simple: dict[str, RoutingStrategy] = {
        "fixed": FixedStrategy(expert=router.default_expert, top_k=router.top_k),
        "keyword": KeywordStrategy(rules=rules, default_expert=router.default_expert, top_k=router.top_k),
    }
    for name, strategy in simple.items():
        strategies.setdefault(name, strategy)
    if router.strategy not in strategies:
        # Built from config alone: there is nothing fitted to keep, so the config's defaults apply too.
        strategies[router.strategy] = apply_router_settings(
            strategy_class(router.strategy)(), config, written_only=False
        )
    return strategies


def build_service(
    config: ServiceConfig,
    backends: Mapping[str, ExpertBackend],
    embedder_factory: Callable[[str], Embedder] | None = None,
    metrics: Metrics | None = None,
    residency: Residency | None = None,
) -> RouterService:
    """`residency`: the manager that already tracks what is loaded, when the service is rebuilt (a hot
    reconfigure); a new one would assume the first N experts are loaded, whatever really is."""
    strategies = build_strategies(config, embedder_factory)
    cache = config.gateway.cache
    cache_embedder = None
    if cache.enabled and cache.similarity_threshold < 1.0 and all(s.embedder is None for s in strategies.values()):
        # Near-duplicates need an embedder even when no strategy routes with one.
        make = embedder_factory or partial(configured_embedder, router=config.router)
        cache_embedder = make(config.router.embedder)
    return RouterService(
        config, backends, strategies, metrics=metrics, residency=residency, cache_embedder=cache_embedder
    )
