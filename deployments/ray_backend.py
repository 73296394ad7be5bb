"""ExpertBackend over a Ray Serve DeploymentHandle; Ray's errors are mapped to ours at this boundary."""

from __future__ import annotations

from typing import Any, AsyncIterator

from router_service.errors import CoEError, ExpertError, ExpertUnavailableError
from router_service.domain import ExpertDelta, ExpertReply, ExpertRequest


def map_ray_error(expert_id: str, exc: BaseException) -> CoEError:
    from ray.exceptions import RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, CoEError):
            return cause
        return ExpertError(f"expert '{expert_id}' failed: {type(cause).__name__ if cause else 'error'}: {cause}")
    if isinstance(exc, CoEError):
        return exc
    name = type(exc).__name__
    # Dead or restarting replicas, back-pressure, unreachable actors: the expert is unavailable.
    return ExpertUnavailableError(f"expert '{expert_id}' is unavailable ({name}: {exc})")


class RayExpertBackend:
    def __init__(self, expert_id: str, handle: Any) -> None:
        self.expert_id = expert_id
        self.handle = handle

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        try:
            return await self.handle.chat.remote(request)
        except Exception as exc:
            raise map_ray_error(self.expert_id, exc) from exc

    async def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        generator = self.handle.options(stream=True).stream.remote(request)
        finished = False
        try:
            async for delta in generator:
                yield delta
            finished = True
        except Exception as exc:
            raise map_ray_error(self.expert_id, exc) from exc
        finally:
            if not finished:
                # The client went away or we gave up: stop the expert generating for nobody.
                generator.cancel()

    async def load(self) -> None:
        try:
            await self.handle.load.remote()
        except Exception as exc:
            raise map_ray_error(self.expert_id, exc) from exc

    async def offload(self) -> None:
        try:
            await self.handle.offload.remote()
        except Exception as exc:
            raise map_ray_error(self.expert_id, exc) from exc

    async def health(self) -> bool:
        try:
            await self.handle.check_health.remote()
            return True
        except Exception:
            return False
