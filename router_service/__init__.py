"""CoE Router core: configuration, wire schema, routing and the service that ties them together.

Nothing in this package imports Ray or vLLM at module import time; the adapters that need them
(`deployments.vllm_backend`) import them lazily, and Ray lives in `deployments/`.
"""

__version__ = "0.1.0"
