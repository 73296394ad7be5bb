"""Experts scaled to zero (`autoscaling_config.min_replicas: 0`): what a request does when its chosen
expert has no running replica.

`wait`: the call waits for Serve to start a replica, under `router.cold_start_wait_s` instead of the
expert's `timeout_s`. `fallback`: the next warm candidate answers at once, and one health call asks
Serve for a replica of the cold expert, so it is warm for the next request. `routing.cold_start`
says which happened. Which experts are cold is kept current by the router's discovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from router_service.config.service import RouterConfig
from router_service.experts.base import ExpertBackend
from router_service.serving.planning import Plan

log = logging.getLogger("coe.router")


class ColdStarts:
    def __init__(
        self, router: RouterConfig, backends: Mapping[str, ExpertBackend], timeouts: Mapping[str, float]
    ) -> None:
        self.router = router
        self.backends = backends
        self.timeouts = timeouts
        self.cold: set[str] = set()
        self._wakes: dict[str, asyncio.Task] = {}

    def apply(self, plan: Plan) -> None:
        """Set the plan's candidates and deadlines for a cold first choice, and note it on the plan."""
        expert_id = plan.candidates[0] if plan.candidates else None
        if expert_id is None or expert_id not in self.cold:
            return
        policy = plan.cold_policy or self.router.cold_start
        warm = [c for c in plan.candidates if c not in self.cold]
        if policy == "fallback" and warm:
            plan.candidates = warm + [c for c in plan.candidates if c in self.cold]
            plan.cold_start = {"expert": expert_id, "action": "fallback", "answered_by": warm[0]}
            self.wake(expert_id)
        else:  # waiting is also what is left when no candidate is warm
            plan.deadlines[expert_id] = max(self.router.cold_start_wait_s, self.timeouts[expert_id])
            plan.cold_start = {"expert": expert_id, "action": "waited"}

    def wake(self, expert_id: str) -> None:
        """One health call queues at the deployment and Serve's autoscaler starts a replica; one wake at
        a time per expert, under the cold-start deadline."""
        running = self._wakes.get(expert_id)
        if running is not None and not running.done():
            return

        async def wake() -> None:
            try:
                await asyncio.wait_for(self.backends[expert_id].health(), self.router.cold_start_wait_s)
            except Exception:
                log.warning("waking cold expert %s did not finish", expert_id)

        self._wakes[expert_id] = asyncio.get_running_loop().create_task(wake())
