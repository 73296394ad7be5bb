"""Batches: group by assigned expert and order the groups so each expert is loaded at most once.

Resident experts go first (no load, and they are then free to be evicted); the rest follow, each
loaded once for its whole group. With budget R and E needed experts, the loads are the number of
needed experts that were not resident: the minimum any order can achieve.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from router_service.api.schema import ChatCompletionRequest
from router_service.errors import CoEError, InvalidRequestError, to_error_response
from router_service.serving.planning import Plan
from router_service.serving.residency import ResidencyStats

if TYPE_CHECKING:
    from router_service.serving.service import ChatOutcome


def group_by_expert(assignments: Sequence[str | None]) -> OrderedDict[str, list[int]]:
    """expert id → indices of the batch items assigned to it (None = item failed before routing)."""
    groups: OrderedDict[str, list[int]] = OrderedDict()
    for index, expert_id in enumerate(assignments):
        if expert_id is not None:
            groups.setdefault(expert_id, []).append(index)
    return groups


def order_groups(groups: OrderedDict[str, list[int]], resident: Iterable[str]) -> list[tuple[str, list[int]]]:
    resident_set = set(resident)
    ranked = sorted(groups.items(), key=lambda kv: (kv[0] not in resident_set, -len(kv[1]), kv[0]))
    return ranked


def count_loads(order: Sequence[str], resident: Iterable[str], budget: int) -> int:
    """Loads an LRU cache of size `budget` does serving `order` (one entry per request) — for comparing
    grouped against arrival order in benchmarks and tests."""
    cache: OrderedDict[str, None] = OrderedDict((e, None) for e in list(resident)[:budget])
    loads = 0
    for expert_id in order:
        if expert_id in cache:
            cache.move_to_end(expert_id)
            continue
        loads += 1
        if len(cache) >= budget:
            cache.popitem(last=False)
        cache[expert_id] = None
    return loads


@dataclass(frozen=True)
class RejectedItem:
    """A batch item the HTTP edge could not even parse (a JSONL line that is not JSON). It is answered
    with a 400 in its own place, so one bad line never sinks the batch."""

    message: str
    param: str | None = None


BatchItem = dict[str, Any] | RejectedItem
Execute = Callable[[Plan], Awaitable["ChatOutcome"]]


def error_item(index: int, exc: BaseException) -> dict[str, Any]:
    status, body, _ = to_error_response(exc)
    return {"index": index, "status": status, "experts": [], "error": body.error.model_dump()}


async def run_batch(
    items: Sequence[BatchItem],
    plan: Callable[[ChatCompletionRequest], Awaitable[Plan]],
    execute: Execute,
    resident: Callable[[], list[str]],
) -> dict[str, Any]:
    """Route every item, group by assigned expert, run the groups in load-minimising order.

    Results come back in input order; a bad item gets its own error. The stats are this batch's own:
    residency records the loads it started and its waits on `Plan.record`, not a diff of global counters.
    """
    record = ResidencyStats()
    started = time.perf_counter()
    results: list[dict[str, Any] | None] = [None] * len(items)
    plans: list[Plan | None] = [None] * len(items)
    for index, raw in enumerate(items):
        try:
            if isinstance(raw, RejectedItem):
                raise InvalidRequestError(raw.message, param=raw.param)
            request = ChatCompletionRequest.model_validate(raw)
            if request.stream:
                raise InvalidRequestError("streaming is not available inside a batch", param="stream")
            planned = await plan(request)
            planned.record = record
            plans[index] = planned
        except (ValidationError, CoEError) as exc:
            results[index] = error_item(index, exc)

    def planned_at(index: int) -> Plan:
        found = plans[index]
        assert found is not None  # only planned items are grouped
        return found

    groups = order_groups(group_by_expert([p.candidates[0] if p else None for p in plans]), resident())
    for _, indices in groups:
        outcomes = await asyncio.gather(*(execute(planned_at(i)) for i in indices), return_exceptions=True)
        for i, outcome in zip(indices, outcomes):
            if isinstance(outcome, BaseException):
                results[i] = error_item(i, outcome)
            else:
                results[i] = {
                    "index": i,
                    "status": 200,
                    "experts": outcome.experts,
                    "response": outcome.response.model_dump(exclude_none=True),
                }
    stats = {
        "requests": len(items),
        "groups": [{"expert": e, "size": len(ix)} for e, ix in groups],
        "loads": record.loads,
        "offloads": record.offloads,
        "switch_seconds": round(record.switch_seconds, 4),
        "queue_wait_seconds": round(record.queue_wait_seconds, 4),
        "load_order": list(record.load_log),
        "seconds": round(time.perf_counter() - started, 4),
    }
    return {"object": "batch.result", "results": results, "stats": stats}
