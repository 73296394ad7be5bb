from router_service.experts.base import ExpertBackend

__all__ = ["ExpertBackend"]
