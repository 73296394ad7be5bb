"""How the core talks to experts: the `ExpertBackend` protocol (+ the optional `Offloadable`), the
error-mapping context manager every adapter wraps its crossings in, and fakes for tests.
Must not import Ray, vLLM or torch: the real adapters live in `deployments/`.
"""

from router_service.experts.base import ExpertBackend, Offloadable

__all__ = ["ExpertBackend", "Offloadable"]
