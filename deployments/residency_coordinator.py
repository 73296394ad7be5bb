"""The memory budget's one owner: a single-replica Serve deployment that every router replica leases from.

Why not Serve's model multiplexing (`@serve.multiplexed`)? It loads several models inside the replicas
of one deployment and evicts per replica, least recently used. Our experts are separate deployments
(separate applications in the split form, each with its own engine arguments, resources and
`serve deploy` lifecycle), a budget spans them, and a batch needs to pick the load order itself
(resident experts first, each needed expert loaded once). So the decisions stay in the core's
`ResidencyManager`, and this deployment only makes it one per application instead of one per router
replica. It alone calls `load`/`offload` on the experts.

On start (and after a restart by Serve) it asks every expert whether its engine is loaded, and takes
that as the truth; experts loaded beyond the budget are offloaded before it answers anything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from deployments.ray_backend import RAY_ERRORS, RayExpertBackend
from router_service.config.service import budget_conflict
from router_service.experts.errors import mapped_errors
from router_service.serving.residency import ResidencyManager
from router_service.serving.shared_residency import LeaseBook

log = logging.getLogger("coe.residency")

# Every router request under a budget makes two calls here; most wait for a load.
COORDINATOR_MAX_ONGOING = 10_000


@serve.deployment(num_replicas=1, max_ongoing_requests=COORDINATOR_MAX_ONGOING, ray_actor_options={"num_cpus": 0})
class ResidencyCoordinator:
    def __init__(
        self, settings: dict[str, Any], handles: dict[str, Any], discovery: dict[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self.book = LeaseBook(self._manager(handles))
        # Synced from the engines at start, outside any request (whose cancel would cancel it).
        self._synced: asyncio.Task | None = asyncio.get_running_loop().create_task(self._sync())
        self._discovery_task = None
        self._scan_lock = asyncio.Lock()
        self._discovery = None
        self.unmanaged: dict[str, str] = {}  # discovered experts the budget cannot hold, and why
        if discovery is not None:  # the split form: the experts are the discovered expert applications
            from deployments.discovery import ExpertDiscovery

            self._discovery = ExpertDiscovery(discovery["app_prefix"], discovery["describe_timeout_s"])
            self._discovery_task = asyncio.get_running_loop().create_task(self._discover_forever(discovery))

    def _manager(self, handles: dict[str, Any]) -> ResidencyManager:
        self.order = list(handles)
        self.handles = dict(handles)
        self.backends = {expert_id: RayExpertBackend(expert_id, handle) for expert_id, handle in handles.items()}
        return ResidencyManager(
            self.backends,
            self.settings["max_resident_experts"],
            self.settings["load_window_s"],
            initially_resident=[],
            wait_timeout_s=self.settings["wait_timeout_s"],
            switch_timeout_s=self.settings["switch_timeout_s"],
        )

    async def _discover_forever(self, settings: dict[str, Any]) -> None:
        while True:
            try:
                await self._scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expert discovery failed; keeping the current experts")
            await asyncio.sleep(settings["interval_s"])

    async def _scan(self) -> None:
        assert self._discovery is not None
        async with self._scan_lock:
            found: dict[str, Any] = {}
            unmanaged: dict[str, str] = {}
            for discovered in await self._discovery.scan():
                # An expert the budget cannot hold (several replicas, autoscaled) is neither counted
                # nor loaded nor offloaded here: one replica's load or offload would misstate the
                # memory it holds. The router refuses such a set out loud (its /health `refused`).
                conflict = budget_conflict(discovered.config)
                if conflict is None:
                    found[discovered.config.id] = discovered.handle
                else:
                    unmanaged[discovered.config.id] = conflict
            for expert_id, conflict in unmanaged.items():
                if self.unmanaged.get(expert_id) != conflict:
                    log.error("expert %s is outside the memory budget's control: %s", expert_id, conflict)
            self.unmanaged = unmanaged
            if list(found) != self.order or any(found[e] is not self.handles[e] for e in found):
                await self._take_experts(found)

    async def _take_experts(self, handles: dict[str, Any]) -> None:
        """An expert application was added, removed or redeployed. The one manager takes the new set in
        place (a second manager would let claims waiting on the first load beyond the budget); the new
        experts' engines say whether they are loaded, and those beyond the budget are offloaded."""
        await self._ready()
        fresh = [e for e, h in handles.items() if self.handles.get(e) is not h]
        backends = {e: (RayExpertBackend(e, h) if e in fresh else self.backends[e]) for e, h in handles.items()}
        states = await asyncio.gather(*(self._is_loaded(e, handles[e]) for e in fresh))
        self.order, self.handles, self.backends = list(handles), dict(handles), backends
        extra = self.book.manager.set_experts(backends, [e for e, up in zip(fresh, states) if up])
        for expert_id in extra:
            log.warning("expert %s was loaded beyond the budget; offloading it", expert_id)
            await self.book.manager.offload_or_log(expert_id)  # the other experts are taken all the same
        log.info("residency coordinator: experts now %s", self.order)

    @staticmethod
    async def _is_loaded(expert_id: str, handle: Any) -> bool:
        try:
            # Long: an expert replica that is still starting its engine answers when it is up.
            return bool(await asyncio.wait_for(handle.is_loaded.remote(), 900.0))
        except Exception:  # unreachable now: counted as not loaded, so a request loads it
            log.warning("expert %s did not say whether it is loaded", expert_id, exc_info=True)
            return False

    async def _sync(self) -> None:
        states = await asyncio.gather(*(self._is_loaded(e, self.handles[e]) for e in self.order))
        extra = self.book.manager.adopt(e for e, up in zip(self.order, states) if up)
        for expert_id in extra:
            log.warning("expert %s was loaded beyond the budget; offloading it", expert_id)
            # Bounded: a failed or timed-out offload fails this sync, and the next call runs it again.
            await self.book.manager.offload(expert_id)
        log.info("residency coordinator: resident %s", self.book.manager.resident_ids())

    async def _ready(self) -> None:
        # Once, before the first answer; a failed or cancelled sync is retried by the next call. (A
        # sync started inside a request is cancelled with it: Serve cancels a cancelled request's calls.)
        synced = self._synced
        if synced is None or (synced.done() and (synced.cancelled() or synced.exception() is not None)):
            synced = self._synced = asyncio.get_running_loop().create_task(self._sync())
        await asyncio.shield(synced)

    async def acquire(self, expert_id: str, ttl_s: float, lease_id: str) -> dict[str, Any]:
        if self._discovery is not None and expert_id not in self.handles and expert_id not in self.unmanaged:
            await self._scan()  # the router found a new expert application before we did
        await self._ready()
        return await self.book.acquire(expert_id, ttl_s, lease_id)

    async def release(self, lease_id: str) -> dict[str, Any]:
        await self._ready()
        return self.book.release(lease_id)

    async def state(self) -> dict[str, Any]:
        await self._ready()
        self.book.expire()
        return {**self.book.state(), "unmanaged": dict(self.unmanaged)}

    async def check_health(self) -> None:
        self.book.expire()  # leases of dead holders go back even when no request comes

    def __del__(self) -> None:
        if self._discovery_task is not None:
            self._discovery_task.cancel()


class RayCoordinator:
    """The router replica's `Coordinator`: the deployment's handle, Ray's errors mapped to ours."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def acquire(self, expert_id: str, ttl_s: float, lease_id: str) -> dict[str, Any]:
        with mapped_errors(expert_id, RAY_ERRORS):
            return await self.handle.acquire.remote(expert_id, ttl_s, lease_id)

    async def release(self, lease_id: str) -> dict[str, Any]:
        with mapped_errors("residency", RAY_ERRORS):
            return await self.handle.release.remote(lease_id)

    async def state(self) -> dict[str, Any]:
        with mapped_errors("residency", RAY_ERRORS):
            return await self.handle.state.remote()
