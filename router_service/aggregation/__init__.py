from router_service.aggregation.base import AggregationResult, Aggregator, make_aggregator

__all__ = ["AggregationResult", "Aggregator", "make_aggregator"]
