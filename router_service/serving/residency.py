"""Which experts are loaded, under a budget of at most N resident experts (accelerator/host memory).

Requests for resident experts pass straight through. A request for a non-resident expert starts a load
after a short window (so concurrent requests for that expert share one load), evicting the least
recently used idle expert when the budget is full. Backends that cannot offload are always resident.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from router_service.errors import CoEError, ExpertUnavailableError
from router_service.experts.base import ExpertBackend, Offloadable
from router_service.experts.errors import ErrorTable, mapped_errors

log = logging.getLogger("coe.residency")


class SwitchTimeoutError(ExpertUnavailableError):
    """A load or offload outlived `residency.switch_timeout_s`."""


def _not_loaded(expert_id: str, exc: BaseException) -> CoEError:
    return ExpertUnavailableError(f"expert '{expert_id}' could not be loaded: {type(exc).__name__}: {exc}")


_LOAD_ERRORS: ErrorTable = ((Exception, _not_loaded),)


@dataclass
class ResidencyStats:
    loads: int = 0
    offloads: int = 0
    switch_seconds: float = 0.0
    queue_wait_seconds: float = 0.0
    load_log: list[str] = field(default_factory=list)

    def snapshot(self) -> dict:
        data = asdict(self)
        data["load_log"] = list(self.load_log[-50:])
        return data

    def add_wait(self, seconds: float) -> None:
        self.queue_wait_seconds += seconds

    def add_switch(self, loaded: str, offloaded: bool, seconds: float) -> None:
        self.loads += 1
        self.offloads += int(offloaded)
        self.switch_seconds += seconds
        self.load_log.append(loaded)


class Residency(Protocol):
    """What the service needs from residency: this replica's `ResidencyManager`, or a
    `SharedResidency` that leases from the one coordinator every router replica shares."""

    enabled: bool
    budget: int
    stats: ResidencyStats

    def manages(self, expert_id: str) -> bool: ...

    def is_resident(self, expert_id: str) -> bool: ...

    def resident_ids(self) -> list[str]: ...

    async def refresh(self) -> None: ...

    def totals(self) -> dict[str, Any]: ...

    def use(self, expert_id: str, record: ResidencyStats | None = None) -> AbstractAsyncContextManager[None]: ...


def can_offload(backend: ExpertBackend) -> bool:
    return isinstance(backend, Offloadable)


class ResidencyManager:
    def __init__(
        self,
        backends: Mapping[str, ExpertBackend],
        budget: int | None = None,
        load_window_s: float = 0.05,
        initially_resident: Iterable[str] | None = None,
        wait_timeout_s: float = 300.0,
        switch_timeout_s: float = 600.0,
    ) -> None:
        self.backends = dict(backends)
        self.offloadable = {e: b for e, b in self.backends.items() if isinstance(b, Offloadable)}
        self.managed = [e for e, b in self.backends.items() if can_offload(b)]
        self.budget = budget if budget is not None else len(self.backends)
        self._has_budget = budget is not None
        self.enabled = budget is not None and budget < len(self.managed)
        self.load_window_s = load_window_s
        self.wait_timeout_s = wait_timeout_s
        self.switch_timeout_s = switch_timeout_s
        start = list(initially_resident) if initially_resident is not None else self.managed[: self.budget]
        self.resident: OrderedDict[str, None] = OrderedDict((e, None) for e in start if e in self.managed)
        self.in_use: dict[str, int] = {e: 0 for e in self.backends}
        self.loading: dict[str, asyncio.Future] = {}
        self.unloading: set[str] = set()
        self.stats = ResidencyStats()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()  # strong refs: a load must not be garbage-collected mid-way

    def is_resident(self, expert_id: str) -> bool:
        return not self.enabled or expert_id not in self.managed or expert_id in self.resident

    def resident_ids(self) -> list[str]:
        return [e for e in self.backends if self.is_resident(e)]

    async def refresh(self) -> None:
        """Nothing to do: this manager is the truth."""

    def totals(self) -> dict[str, Any]:
        return {k: v for k, v in self.stats.snapshot().items() if k != "load_log"}

    def manages(self, expert_id: str) -> bool:
        return self.enabled and expert_id in self.managed

    @asynccontextmanager
    async def use(self, expert_id: str, record: ResidencyStats | None = None) -> AsyncIterator[None]:
        """Hold `expert_id` resident for the block. `record` also gets the waits of this claim and the
        loads it started, so a batch reports its own numbers however much other traffic runs alongside."""
        if not self.manages(expert_id):
            yield
            return
        await self.acquire(expert_id, record)
        try:
            yield
        finally:
            self.release(expert_id)

    async def acquire(self, expert_id: str, record: ResidencyStats | None = None) -> None:
        """Claim `expert_id` (loading it first when needed); every claim is paired with one `release`."""
        if self.manages(expert_id):
            await self._acquire(expert_id, record)

    def release(self, expert_id: str) -> None:
        if self.manages(expert_id) and self.in_use.get(expert_id, 0) > 0:
            self.in_use[expert_id] -= 1
            self._notify()

    def set_experts(self, backends: Mapping[str, ExpertBackend], loaded: Iterable[str]) -> list[str]:
        """The set of experts changed (the split form: an expert application added, removed or
        redeployed), in place, so claims and loads under way stay on this one manager. Experts that stay
        keep their state. A new one (or one whose backend changed) is resident when its engine says it
        is loaded and there is room; the ones beyond the budget are returned, for the caller to offload."""
        loaded_set = set(loaded)
        fresh = [e for e, b in backends.items() if self.backends.get(e) is not b]
        for expert_id in [*fresh, *(e for e in self.backends if e not in backends)]:
            self.resident.pop(expert_id, None)
        self.backends = dict(backends)
        self.offloadable = {e: b for e, b in self.backends.items() if isinstance(b, Offloadable)}
        self.managed = [e for e, b in self.backends.items() if can_offload(b)]
        self.in_use = {e: self.in_use.get(e, 0) for e in self.backends}
        if not self._has_budget:
            self.budget = len(self.backends)
        self.enabled = self._has_budget and self.budget < len(self.managed)
        extra = []
        for expert_id in fresh:
            if expert_id not in loaded_set or expert_id not in self.managed:
                continue
            if len(self.resident) + len(self.loading) + len(self.unloading) < self.budget:
                self.resident[expert_id] = None
            else:
                extra.append(expert_id)
        self._notify()
        return extra

    def adopt(self, loaded: Iterable[str]) -> list[str]:
        """Take the engines' real state as the truth (a coordinator that restarted asks them): the
        loaded experts become resident, in config order. Returns the ones beyond the budget, which the
        caller must offload before serving."""
        loaded_set = set(loaded)
        now = [e for e in self.managed if e in loaded_set]
        self.resident = OrderedDict((e, None) for e in now[: self.budget])
        return now[self.budget :]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _records(self, record: ResidencyStats | None) -> list[ResidencyStats]:
        return [self.stats] if record is None else [self.stats, record]

    async def _acquire(self, expert_id: str, record: ResidencyStats | None) -> None:
        waited_from = time.perf_counter()
        deadline = waited_from + self.wait_timeout_s
        while True:
            if expert_id in self.resident:
                self.resident.move_to_end(expert_id)
                self.in_use[expert_id] += 1
                for stats in self._records(record):
                    stats.add_wait(time.perf_counter() - waited_from)
                return
            pending = self.loading.get(expert_id)
            if pending is None:
                if len(self.resident) + len(self.loading) + len(self.unloading) < self.budget:
                    pending = self._start_load(expert_id, None, record)
                else:
                    victim = next((e for e in self.resident if self.in_use[e] == 0), None)
                    if victim is None:
                        # Every resident expert is busy: wait for one to finish, but not for ever.
                        await self._before(deadline, self._changed.wait(), expert_id, "a free slot")
                        continue
                    del self.resident[victim]
                    self.unloading.add(victim)
                    pending = self._start_load(expert_id, victim, record)
            # Claim before the load lands, so nobody can evict it between landing and our turn.
            self.in_use[expert_id] += 1
            try:
                await self._before(deadline, asyncio.shield(pending), expert_id, "its load")
            except BaseException:
                self.in_use[expert_id] -= 1
                self._notify()
                raise
            for stats in self._records(record):
                stats.add_wait(time.perf_counter() - waited_from)
            return

    async def _before(self, deadline: float, waiting, expert_id: str, what: str) -> None:
        """Await `waiting` until `deadline`; past it, 503 with Retry-After (a retryable error, so the
        caller falls back to its next candidate first). A shielded load goes on for the next request."""
        try:
            await asyncio.wait_for(waiting, max(deadline - time.perf_counter(), 0.0))
        except asyncio.TimeoutError:
            raise self._timed_out(
                ExpertUnavailableError,
                f"expert '{expert_id}' did not become resident within {self.wait_timeout_s:g} s "
                f"(memory budget {self.budget}; waited for {what})",
            ) from None

    async def _within(self, step: Awaitable[None], expert_id: str, what: str) -> None:
        """A load or offload that does not finish in time fails like one that errs: its waiters get the
        error and its slot is freed, instead of holding the budget for ever (a replica that never comes
        back, an engine start that hangs)."""
        try:
            await asyncio.wait_for(step, self.switch_timeout_s)
        except asyncio.TimeoutError:
            raise self._timed_out(
                SwitchTimeoutError,
                f"expert '{expert_id}': {what} did not finish within {self.switch_timeout_s:g} s "
                f"(residency.switch_timeout_s)",
            ) from None

    def _timed_out(self, error: type[ExpertUnavailableError], message: str) -> ExpertUnavailableError:
        """503 `residency_timeout` with Retry-After: retryable, so the caller falls back first."""
        return error(
            message, code="residency_timeout", headers={"retry-after": str(max(int(self.wait_timeout_s // 10), 1))}
        )

    async def offload(self, expert_id: str) -> None:
        """Offload an expert outside a switch (one found loaded beyond the budget), under the same deadline."""
        await self._within(self.offloadable[expert_id].offload(), expert_id, "offload")

    async def offload_or_log(self, expert_id: str) -> None:
        """`offload`, for callers that go on either way; a failure is logged, since the expert may then
        hold memory past the budget."""
        try:
            await self.offload(expert_id)
        except Exception:
            log.error("expert %s: could not offload it; it may hold memory past the budget", expert_id, exc_info=True)

    def _start_load(self, expert_id: str, victim: str | None, record: ResidencyStats | None) -> asyncio.Future:
        """A load is counted for whoever started it (its `record`); requests that join it only wait."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.loading[expert_id] = future
        task = asyncio.get_running_loop().create_task(self._switch(expert_id, victim, future, record))
        self._tasks.add(task)
        return future

    async def _switch(
        self, expert_id: str, victim: str | None, future: asyncio.Future, record: ResidencyStats | None
    ) -> None:
        try:
            if self.load_window_s:
                await asyncio.sleep(self.load_window_s)  # let concurrent requests for this expert join
            started = time.perf_counter()
            with mapped_errors(expert_id, _LOAD_ERRORS):
                if victim is not None:
                    await self.offload(victim)
                    self.unloading.discard(victim)
                try:
                    await self._within(self.offloadable[expert_id].load(), expert_id, "load")
                except SwitchTimeoutError:
                    # The engine may still come up after we stopped waiting: put it back down, so
                    # an expert nobody counts does not hold memory beyond the budget.
                    await self.offload_or_log(expert_id)
                    raise
            for stats in self._records(record):
                stats.add_switch(expert_id, victim is not None, time.perf_counter() - started)
            if expert_id in self.backends:  # not removed (set_experts) while it loaded
                self.resident[expert_id] = None
            future.set_result(None)
        except BaseException as exc:  # a failed load must wake its waiters with the error
            if victim is not None:
                self.unloading.discard(victim)
            if not future.done():
                future.set_exception(exc)
        finally:
            self.loading.pop(expert_id, None)
            self._tasks.discard(asyncio.current_task())
            self._notify()
