from router_service.serving.aggregation.base import AggregationResult, Aggregator, make_aggregator

__all__ = ["AggregationResult", "Aggregator", "make_aggregator"]
