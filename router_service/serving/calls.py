"""Calling experts for a plan: one call under its deadline and residency claim, fallback down the
candidate list, and fan-out to several under the aggregation deadline.

Every failure leaves here as a `CoEError` (the core's deadline table, then `ExpertError` for anything
else), so the facade only ever sees domain errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from router_service.domain import ExpertDelta, ExpertReply
from router_service.errors import CoEError, ExpertError, ExpertTimeoutError, ExpertUnavailableError
from router_service.experts.base import ExpertBackend
from router_service.experts.errors import deadline_errors, mapped_errors
from router_service.serving.fanout import FanoutResult, fan_out
from router_service.serving.metrics import Metrics
from router_service.serving.planning import Plan
from router_service.serving.residency import Residency

log = logging.getLogger("coe.router")
RETRYABLE = (ExpertError, ExpertTimeoutError, ExpertUnavailableError)


class ExpertCaller:
    def __init__(
        self,
        backends: Mapping[str, ExpertBackend],
        timeouts: Mapping[str, float],
        residency: Residency,
        metrics: Metrics,
    ) -> None:
        self.backends = backends
        self.timeouts = timeouts
        self.residency = residency
        self.metrics = metrics

    async def call(self, expert_id: str, plan: Plan) -> ExpertReply:
        timeout_s = plan.deadlines.get(expert_id, self.timeouts[expert_id])
        with mapped_errors(expert_id, deadline_errors(timeout_s)):
            async with self.residency.use(expert_id, plan.record):
                return await asyncio.wait_for(self.backends[expert_id].chat(plan.expert_request), timeout_s)

    async def call_with_fallback(self, plan: Plan) -> ExpertReply:
        last_error: CoEError | None = None
        for expert_id in plan.candidates:
            try:
                return await self.call(expert_id, plan)
            except RETRYABLE as exc:
                last_error = exc
                self.note_failure(plan, expert_id, exc)
        raise final_error(plan, last_error)

    async def gather(self, plan: Plan, deadline_s: float) -> FanoutResult:
        return self.settled(await fan_out(plan.aggregate_over, lambda e: self.call(e, plan), deadline_s))

    def settled(self, result: FanoutResult) -> FanoutResult:
        """Count the candidates that were dropped; fail when none answered."""
        for dropped in result.dropped:
            self.metrics.fallback(dropped["expert"], dropped["reason"])
        if not result.replies:
            reasons = "; ".join(f"{d['expert']}: {d['reason']}" for d in result.dropped)
            timed_out = all(d["reason"] in ("deadline", "expert_timeout") for d in result.dropped)
            error_cls = ExpertTimeoutError if timed_out else ExpertUnavailableError
            raise error_cls(f"no expert answered in time ({reasons})")
        return result

    async def next_delta(
        self, expert_id: str, deltas: AsyncIterator[ExpertDelta], timeout_s: float | None = None
    ) -> ExpertDelta | None:
        """The next piece of a stream, under the expert's deadline (or `timeout_s`); None at the end."""
        timeout_s = timeout_s if timeout_s is not None else self.timeouts[expert_id]
        with mapped_errors(expert_id, deadline_errors(timeout_s)):
            try:
                return await asyncio.wait_for(deltas.__anext__(), timeout_s)
            except StopAsyncIteration:
                return None

    def note_failure(self, plan: Plan, expert_id: str, exc: CoEError) -> None:
        log.warning("expert %s failed for %s: %s", expert_id, plan.request_id, exc.message)
        self.metrics.fallback(expert_id, exc.code or exc.error_type)
        if plan.decision is not None:
            plan.decision.fallback.append({"expert": expert_id, "reason": exc.code, "message": exc.message})


def final_error(plan: Plan, last_error: CoEError | None) -> CoEError:
    if last_error is None:
        return ExpertUnavailableError("no expert could take the request")
    if len(plan.candidates) > 1:
        return ExpertUnavailableError(
            f"all candidate experts failed ({', '.join(plan.candidates)}); last error: {last_error.message}",
            headers=last_error.headers,  # e.g. the Retry-After of a residency wait that ran out
        )
    return last_error


async def close_quietly(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken stream must not mask the real error
            log.debug("closing an expert stream failed", exc_info=True)
