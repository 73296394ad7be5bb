"""The methods the router calls on an expert replica, delegated to its `ExpertBackend`.

Shared by the vLLM deployment and its test double, so both answer the router the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from router_service.domain import ExpertDelta, ExpertReply, ExpertRequest


class ExpertShell:
    backend: Any  # an ExpertBackend with load/offload
    description: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """This expert's `experts[]` config entry: how a split deployment's router learns about it."""
        return self.description

    async def load(self) -> None:
        await self.backend.load()

    async def offload(self) -> None:
        await self.backend.offload()

    def is_loaded(self) -> bool:
        """The engine's own state (a restarted residency coordinator starts from it)."""
        return bool(self.backend.is_loaded())

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        return await self.backend.chat(request)

    async def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        async for delta in self.backend.stream(request):
            yield delta
