"""Test double of ExpertDeployment (same methods), backed by FakeExpertBackend. Used by tests/serve only."""

from __future__ import annotations

from typing import Any, AsyncIterator

from ray import serve

from router_service.experts.fake import FakeExpertBackend
from router_service.types import ExpertDelta, ExpertReply, ExpertRequest


@serve.deployment
class FakeExpertDeployment:
    def __init__(self, expert_id: str, model: str, engine_args: dict[str, Any],
                 fake: dict[str, Any] | None = None) -> None:
        self.backend = FakeExpertBackend(expert_id, **(fake or {}))

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        return await self.backend.chat(request)

    async def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        async for delta in self.backend.stream(request):
            yield delta

    async def check_health(self) -> None:
        return None
