"""Event-driven test doubles (bug 5: no wall-clock timing in unit tests).

A `Gate` holds whoever awaits it until the test opens it, and counts who is waiting, so a test can
*arrange* "these requests are in flight" instead of hoping a sleep lasts long enough. A test then waits
for a condition in one of two ways; neither ever passes or fails a correct program because of speed:

* `until`: for work that runs entirely on the event loop (residency manager, fakes, a request the
  middleware answers itself). It allows a fixed number of loop iterations and reads no clock: loop-only
  work needs no wall time to advance, so no machine is too slow for it, and a regression fails at once.
* `eventually`: for work that also runs in worker threads (the planner routes in `asyncio.to_thread`),
  where no iteration budget is right on a loaded machine. It waits as long as the condition needs; its
  only clock is a hang guard (`HANG_GUARD_S`, a minute for what takes milliseconds) that turns a
  regression's deadlock into a failed assertion instead of a hung run. It measures nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from router_service.experts.fake import FakeExpertBackend, OffloadableFakeExpert

# Loop iterations `until` allows. Loop-only work here settles in under ten; the margin only matters
# when something is genuinely stuck, and then the test fails at once.
MAX_TICKS = 10_000
# `eventually`'s hang guard, in seconds. Not a latency bound: the conditions it waits for hold within
# milliseconds; this only ends a deadlocked test.
HANG_GUARD_S = 60.0


async def until(condition: Callable[[], bool], ticks: int = MAX_TICKS) -> bool:
    """Let other tasks run (sleep(0), no wall clock) until `condition()` holds; False if it never does.
    Only for work that never leaves the event loop (see the module docstring)."""
    for _ in range(ticks):
        if condition():
            return True
        await asyncio.sleep(0)
    return condition()


async def eventually(condition: Callable[[], bool], hang_guard_s: float = HANG_GUARD_S) -> bool:
    """Let other tasks and worker threads run until `condition()` holds; False only on a deadlock."""
    give_up = time.monotonic() + hang_guard_s
    while not condition():
        if time.monotonic() > give_up:
            return False
        await asyncio.sleep(0)
    return True


class Gate:
    """Holds every `await gate.wait()` until `open()`; `waiting` counts who is held right now."""

    def __init__(self) -> None:
        self.waiting = 0
        self.passed = 0
        self._open = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait(self) -> None:
        self.waiting += 1
        try:
            await self._open.wait()
        finally:
            self.waiting -= 1
        self.passed += 1

    def open(self) -> None:
        self._open.set()


class GatedExpert(FakeExpertBackend):
    """A fake expert whose answers wait at `gate`: requests stay in flight until the test opens it."""

    def __init__(self, expert_id: str, gate: Gate, **kwargs) -> None:
        super().__init__(expert_id, **kwargs)
        self.gate = gate

    async def chat(self, request):
        await self.gate.wait()
        return await super().chat(request)


class GatedLoadExpert(OffloadableFakeExpert):
    """An offloadable fake whose `load()` waits at `gate`: a load stays in progress until the test opens it."""

    def __init__(self, expert_id: str, gate: Gate, **kwargs) -> None:
        super().__init__(expert_id, load_delay_s=0.0, **kwargs)
        self.gate = gate
        self.load_started = 0

    async def load(self) -> None:
        self.load_started += 1
        await self.gate.wait()
        await super().load()
