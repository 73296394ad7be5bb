"""The methods the router calls on an expert replica, delegated to its `ExpertBackend`.

Shared by the vLLM deployment and its test double, so both answer the router the same way.

An offload waits until the replica has answered the calls it is running. The residency coordinator
offloads only experts nobody holds a lease on, so normally there is nothing to wait for. But a
lease can outlive the coordinator's memory of it: the coordinator restarted (it starts from the
engines' state, not from the leases), or a call ran past its lease's time to live. The engine is
the one place that knows what it is running, so the guard sits here. The wait has a deadline, the
expert's own per-call `timeout_s`: by then the router has given up on the call anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from router_service.config.service import ExpertConfig
from router_service.domain import ExpertDelta, ExpertReply, ExpertRequest

log = logging.getLogger("coe.expert")

# For a shell described without a `timeout_s`: the config's own default, not a copy of it.
DEFAULT_DRAIN_TIMEOUT_S = float(ExpertConfig.model_fields["timeout_s"].default)


class InFlight:
    """The calls a replica is answering now; `drained` waits until there are none."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def call(self) -> Iterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """True once no call is running; False when `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True


class ExpertShell:
    backend: Any  # an ExpertBackend with load/offload
    description: dict[str, Any]
    _in_flight: InFlight | None = None

    @property
    def in_flight(self) -> InFlight:
        if self._in_flight is None:  # the deployments set their attributes without calling a base __init__
            self._in_flight = InFlight()
        return self._in_flight

    @property
    def drain_timeout_s(self) -> float:
        return float(self.description.get("timeout_s") or DEFAULT_DRAIN_TIMEOUT_S)

    def describe(self) -> dict[str, Any]:
        """This expert's `experts[]` config entry: how a split deployment's router learns about it."""
        return self.description

    async def load(self) -> None:
        await self.backend.load()

    async def offload(self) -> None:
        """Free the engine's memory once the calls it is running are answered (module docstring)."""
        if not await self.in_flight.drained(self.drain_timeout_s):
            log.warning(
                "expert %s: %d calls still running after %g s; offloading anyway, they fail",
                self.description.get("id"),
                self.in_flight.count,
                self.drain_timeout_s,
            )
        await self.backend.offload()

    def is_loaded(self) -> bool:
        """The engine's own state (a restarted residency coordinator starts from it)."""
        return bool(self.backend.is_loaded())

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        with self.in_flight.call():
            return await self.backend.chat(request)

    async def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        with self.in_flight.call():  # until the last piece is out, or the caller goes away
            async for delta in self.backend.stream(request):
                yield delta
