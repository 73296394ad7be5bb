"""One vLLM engine per expert replica. Everything it does is in `VLLMEngineBackend`; this is the Ray shell."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.expert_shell import ExpertShell
from deployments.vllm_backend import VLLMEngineBackend


@serve.deployment(health_check_period_s=10, health_check_timeout_s=60, graceful_shutdown_timeout_s=10)
class ExpertDeployment(ExpertShell):
    def __init__(
        self,
        expert_id: str,
        model: str,
        engine_args: dict[str, Any],
        start_loaded: bool = True,
        describe: dict[str, Any] | None = None,
    ) -> None:
        self.description = describe or {"id": expert_id, "model": model}
        self.backend = VLLMEngineBackend(expert_id, model, engine_args)
        if start_loaded:
            self.backend.start()

    async def check_health(self) -> None:
        # An expert offloaded by the router's memory budget is healthy: it is loaded on demand.
        if self.backend.is_loaded() and not await self.backend.health():
            raise RuntimeError(f"expert {self.backend.expert_id}: engine is not healthy")

    def __del__(self) -> None:
        try:
            self.backend.shutdown()
        except Exception:
            pass
