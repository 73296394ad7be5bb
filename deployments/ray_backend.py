"""ExpertBackend over a Ray Serve DeploymentHandle. Ray's errors are mapped to ours by one table,
`RAY_ERRORS`, wrapped around every crossing into Ray, stream iteration included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray.exceptions import RayTaskError

from router_service.domain import ExpertDelta, ExpertReply, ExpertRequest
from router_service.errors import CoEError, ExpertError
from router_service.experts.errors import ErrorTable, expert_unavailable, mapped_errors


def _task_error(expert_id: str, exc: BaseException) -> CoEError:
    """The expert's own code raised: ours pass through as they were raised there, others are a 502."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, CoEError):
        return cause
    return ExpertError(f"expert '{expert_id}' failed: {type(cause).__name__ if cause else 'error'}: {cause}")


# Anything else from Ray (dead or restarting replicas, back-pressure, unreachable actors) means the
# expert is unavailable right now: a 503 the service may fall back from.
RAY_ERRORS: ErrorTable = ((RayTaskError, _task_error), (Exception, expert_unavailable))


class RayExpertBackend:
    def __init__(self, expert_id: str, handle: Any) -> None:
        self.expert_id = expert_id
        self.handle = handle

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        with mapped_errors(self.expert_id, RAY_ERRORS):
            return await self.handle.chat.remote(request)

    async def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        generator = self.handle.options(stream=True).stream.remote(request)
        finished = False
        try:
            with mapped_errors(self.expert_id, RAY_ERRORS):
                async for delta in generator:
                    yield delta
            finished = True
        finally:
            if not finished:
                # The client went away or we gave up: stop the expert generating for nobody.
                generator.cancel()

    async def load(self) -> None:
        with mapped_errors(self.expert_id, RAY_ERRORS):
            await self.handle.load.remote()

    async def offload(self) -> None:
        with mapped_errors(self.expert_id, RAY_ERRORS):
            await self.handle.offload.remote()

    async def health(self) -> bool:
        try:
            await self.handle.check_health.remote()
            return True
        except Exception:
            return False
