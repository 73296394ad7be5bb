"""The one interface the service talks to experts through (like httpx's transport).

Implementations: `deployments.vllm_backend.VLLMEngineBackend` (in-process vLLM engine), `fake.FakeExpertBackend`
(tests), and the Ray adapter in `deployments/` (calls an expert deployment through its handle).
Errors from a backend's own stack are mapped at this boundary to `router_service.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from router_service.domain import ExpertDelta, ExpertReply, ExpertRequest


@runtime_checkable
class ExpertBackend(Protocol):
    expert_id: str

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        """Generate a whole answer."""

    def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        """Generate an answer piece by piece; the last delta carries finish_reason and token counts."""

    async def health(self) -> bool:
        """True when the expert can take requests."""


@runtime_checkable
class Offloadable(Protocol):
    """Optional capability: a backend that can free its memory and take it back (vLLM sleep/wake).

    Contract: `offload` leaves the backend unable to answer until `load` returns; both are idempotent
    from the caller's side only through `ResidencyManager`, which never loads a loaded backend.
    Backends without it are always resident.
    """

    async def load(self) -> None:
        """Make the expert ready to answer again."""

    async def offload(self) -> None:
        """Release the expert's accelerator/host memory."""
