from router_service.strategies.base import (
    RoutingStrategy,
    get_strategy,
    known_strategies,
)

__all__ = ["RoutingStrategy", "get_strategy", "known_strategies"]
