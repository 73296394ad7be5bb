"""One memory budget for every router replica: a coordinator holds it, replicas lease experts from it.

`ResidencyManager` decides loads and evictions for whoever holds it. With several router replicas
(or a router rebuilt by a hot reconfigure) each would keep its own count, so the budget would not be
global. Here one `LeaseBook` (inside a single coordinator deployment, see
`deployments/residency_coordinator.py`) owns the manager; a router replica's `SharedResidency` asks it
for a lease on an expert before each call and gives the lease back after. The coordinator is the only
one that loads or offloads, so the budget holds across replicas and nodes.

A lease carries a time to live: a replica that dies holding one cannot pin an expert for ever. A
caller that stops waiting for a lease (a fan-out deadline cancels it while the expert loads) gives
it back by name, and the coordinator refuses it when it would have been granted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from router_service.errors import ExpertUnavailableError
from router_service.serving.residency import ResidencyManager, ResidencyStats

log = logging.getLogger("coe.residency")


@dataclass
class Lease:
    expert_id: str
    expires_at: float


class LeaseBook:
    """The coordinator's side: a `ResidencyManager` whose claims are leases with a time to live."""

    def __init__(self, manager: ResidencyManager, clock=time.monotonic) -> None:
        self.manager = manager
        self.leases: dict[str, Lease] = {}
        # Leases given back before they were granted (the caller stopped waiting: a fan-out deadline,
        # a client gone) → when to forget that. Granting one of them releases it at once.
        self.abandoned: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._clock = clock

    async def acquire(self, expert_id: str, ttl_s: float, lease_id: str | None = None) -> dict[str, Any]:
        """Claim `expert_id` for at most `ttl_s` seconds; returns the lease and this claim's own
        numbers (its wait, the load it started), so the caller can report them as its own. `lease_id`
        is the caller's name for the claim, so it can give it back even if it stops waiting first."""
        self.expire()
        lease_id = lease_id or f"{expert_id}#{next(self._ids)}"
        record = ResidencyStats()
        if lease_id in self.abandoned:
            return {"lease": "", "record": record.snapshot(), "resident": self.manager.resident_ids()}
        await self.manager.acquire(expert_id, record)
        if not self.manager.manages(expert_id):
            lease_id = ""
        elif self.abandoned.pop(lease_id, None) is not None:
            self.manager.release(expert_id)  # nobody is waiting for it any more
            lease_id = ""
        else:
            self.leases[lease_id] = Lease(expert_id, self._clock() + ttl_s)
        return {"lease": lease_id, "record": record.snapshot(), "resident": self.manager.resident_ids()}

    def release(self, lease_id: str, ttl_s: float = 3600.0) -> dict[str, Any]:
        lease = self.leases.pop(lease_id, None)
        if lease is not None:
            self.manager.release(lease.expert_id)
        elif lease_id:
            self.abandoned[lease_id] = self._clock() + ttl_s  # not granted yet: refuse it when it is
        self.expire()
        return self.state()

    def expire(self) -> list[str]:
        """Give back leases past their time (their holder died or hung), so the expert can be evicted."""
        now = self._clock()
        overdue = [lease_id for lease_id, lease in self.leases.items() if lease.expires_at <= now]
        for lease_id in overdue:
            log.warning("lease %s expired without release; giving it back", lease_id)
            self.manager.release(self.leases.pop(lease_id).expert_id)
        for lease_id in [k for k, until in self.abandoned.items() if until <= now]:
            del self.abandoned[lease_id]
        return overdue

    def state(self) -> dict[str, Any]:
        stats = self.manager.stats.snapshot()
        return {
            "budget": self.manager.budget,
            "enabled": self.manager.enabled,
            "resident": self.manager.resident_ids(),
            "loading": sorted(self.manager.loading),
            "leases": len(self.leases),
            "stats": stats,
        }


class Coordinator(Protocol):
    """The router replica's view of the coordinator (a Serve handle in production, a `LeaseBook` in tests)."""

    async def acquire(self, expert_id: str, ttl_s: float, lease_id: str) -> dict[str, Any]: ...

    async def release(self, lease_id: str) -> dict[str, Any]: ...

    async def state(self) -> dict[str, Any]: ...


class SharedResidency:
    """A router replica's residency, with the same interface as `ResidencyManager`, over a coordinator.

    `stats` counts this replica's claims (its waits, the loads its requests started); what is resident
    comes from the coordinator's last answer, refreshed on every lease and by `refresh`."""

    def __init__(
        self,
        coordinator: Coordinator,
        managed: Iterable[str],
        budget: int,
        wait_timeout_s: float,
        lease_ttl_s: float,
        all_experts: Iterable[str] = (),
    ) -> None:
        self.coordinator = coordinator
        self.managed = list(managed)
        self.all_experts = list(all_experts) or list(self.managed)
        self.budget = budget
        self.enabled = budget < len(self.managed)
        self.wait_timeout_s = wait_timeout_s
        self.lease_ttl_s = lease_ttl_s
        self.stats = ResidencyStats()
        self._resident: list[str] = self.managed[:budget]
        self._pending: set[asyncio.Task] = set()
        self._totals: dict[str, Any] = {k: v for k, v in self.stats.snapshot().items() if k != "load_log"}

    def manages(self, expert_id: str) -> bool:
        return self.enabled and expert_id in self.managed

    def is_resident(self, expert_id: str) -> bool:
        return not self.manages(expert_id) or expert_id in self._resident

    def resident_ids(self) -> list[str]:
        return [e for e in self.all_experts if self.is_resident(e)]

    async def refresh(self) -> None:
        """Ask the coordinator what is resident now (a batch orders its groups by it)."""
        if self.enabled:
            state = await asyncio.wait_for(self.coordinator.state(), 10.0)
            self._resident = list(state["resident"])
            self._totals = state["stats"]

    def totals(self) -> dict[str, Any]:
        """The application's loads, offloads and waits, every replica's requests together (as of the
        last `refresh`), not only this replica's claims."""
        return {k: v for k, v in self._totals.items() if k != "load_log"}

    @asynccontextmanager
    async def use(self, expert_id: str, record: ResidencyStats | None = None) -> AsyncIterator[None]:
        if not self.manages(expert_id):
            yield
            return
        # The coordinator's own wait has the same deadline; ours adds a margin for the round trip, so
        # the coordinator's 503 (with its reason) normally arrives first.
        lease_id = f"{expert_id}#{uuid.uuid4().hex}"
        try:
            reply = await asyncio.wait_for(
                self.coordinator.acquire(expert_id, self.lease_ttl_s, lease_id), self.wait_timeout_s + 10.0
            )
        except BaseException as exc:
            # We stop waiting (deadline, a fan-out deadline's cancel, an error): the coordinator may
            # still grant the claim later, to nobody. Give it back now; it refuses it when it comes.
            self._abandon(lease_id)
            if isinstance(exc, asyncio.TimeoutError):
                raise ExpertUnavailableError(
                    f"expert '{expert_id}': the residency coordinator did not answer within {self.wait_timeout_s:g} s",
                    code="residency_timeout",
                    headers={"retry-after": str(max(int(self.wait_timeout_s // 10), 1))},
                ) from None
            raise
        self._resident = list(reply["resident"])
        claim = reply["record"]
        for stats in [self.stats] if record is None else [self.stats, record]:
            stats.add_wait(claim["queue_wait_seconds"])
            stats.loads += claim["loads"]
            stats.offloads += claim["offloads"]
            stats.switch_seconds += claim["switch_seconds"]
            stats.load_log.extend(claim["load_log"])
        try:
            yield
        finally:
            if reply["lease"]:
                await self._release(reply["lease"])

    def _abandon(self, lease_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._release(lease_id))
        self._pending.add(task)  # a strong reference until it is done
        task.add_done_callback(self._pending.discard)

    async def _release(self, lease_id: str) -> None:
        try:
            # Shielded: a cancelled request must still give its lease back.
            state = await asyncio.wait_for(asyncio.shield(self.coordinator.release(lease_id)), 10.0)
            self._resident = list(state["resident"])
        except Exception:
            log.warning("could not release lease %s; it expires after %g s", lease_id, self.lease_ttl_s, exc_info=True)
