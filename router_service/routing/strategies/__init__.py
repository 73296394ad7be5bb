from router_service.routing.strategies.base import (
    RoutingStrategy,
    get_strategy,
    known_strategies,
)

__all__ = ["RoutingStrategy", "get_strategy", "known_strategies"]
