"""Batches: run expert by expert, so that each expert is loaded at most once per batch.

Every call an item needs is assigned to its expert: its one answer, or, for an aggregated item, one
call per candidate and the synthesizer's. Resident experts go first (no load, and they are then free
to be evicted); the rest follow, each loaded once for all its calls; the synthesizer goes last. The
loads are then the needed experts that were not resident: the minimum any order can achieve.
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
from router_service.domain import ExpertReply
from router_service.errors import CoEError, InvalidRequestError, to_error_response
from router_service.serving.fanout import FanoutResult, dropped_entry
from router_service.serving.planning import Plan
from router_service.serving.residency import ResidencyStats

if TYPE_CHECKING:
    from router_service.serving.service import ChatOutcome


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


@dataclass(frozen=True)
class BatchSteps:
    """What a batch needs from the service: plan an item, run a one-expert item (with its fallbacks),
    call one candidate of an aggregated item, and merge an aggregated item's replies."""

    plan: Callable[[ChatCompletionRequest], Awaitable[Plan]]
    execute: Execute
    call: Callable[[str, Plan], Awaitable[ExpertReply]]
    finish: Callable[[Plan, FanoutResult], Awaitable[ChatOutcome]]
    resident: Callable[[], list[str]]
    synthesizer: str | None = None  # the expert that writes aggregated answers, when it is one


def expert_order(work: dict[str, int], resident: Iterable[str], last: str | None) -> list[str]:
    """Resident experts first (no load, then free to be evicted), the rest by amount of work; `last`
    (the synthesizer, which needs every candidate's reply first) at the end."""
    resident_set = set(resident)
    order = sorted((e for e in work if e != last), key=lambda e: (e not in resident_set, -work[e], e))
    return order + ([last] if last in work else [])


async def run_batch(items: Sequence[BatchItem], steps: BatchSteps) -> dict[str, Any]:
    """Route every item, then run the batch expert by expert, so each expert is loaded once.

    An item answered by one expert runs in that expert's phase. An aggregated item (top_k > 1, or
    aggregation on) has one call in the phase of each of its candidates, and is merged when they have
    all run; a synthesizer's calls make up the last phase. The loads are then the needed experts that
    were not resident: the minimum, whatever mix of items the batch holds.

    Results come back in input order; a bad item gets its own error. The stats are this batch's own:
    residency records the loads it started and its waits on `Plan.record`, not a diff of global counters.
    """
    record = ResidencyStats()
    started = time.perf_counter()
    results: list[dict[str, Any] | None] = [None] * len(items)
    plans: dict[int, Plan] = {}
    for index, raw in enumerate(items):
        try:
            if isinstance(raw, RejectedItem):
                raise InvalidRequestError(raw.message, param=raw.param)
            request = ChatCompletionRequest.model_validate(raw)
            if request.stream:
                raise InvalidRequestError("streaming is not available inside a batch", param="stream")
            planned = await steps.plan(request)
            planned.record = record
            plans[index] = planned
        except (ValidationError, CoEError) as exc:
            results[index] = error_item(index, exc)

    aggregated = {i for i, p in plans.items() if len(p.aggregate_over) > 1}
    singles: dict[str, list[int]] = {}
    candidates: dict[str, list[int]] = {}
    for i, p in plans.items():
        if i in aggregated:
            for expert_id in p.aggregate_over:
                candidates.setdefault(expert_id, []).append(i)
        else:
            singles.setdefault(p.candidates[0], []).append(i)
    synthesizer = steps.synthesizer if aggregated else None
    work = {e: len(singles.get(e, [])) + len(candidates.get(e, [])) for e in {*singles, *candidates}}
    if synthesizer is not None:
        work[synthesizer] = work.get(synthesizer, 0) + len(aggregated)
    order = expert_order(work, steps.resident(), synthesizer)

    def answered(i: int, outcome: ChatOutcome | BaseException) -> None:
        if isinstance(outcome, BaseException):
            results[i] = error_item(i, outcome)
        else:
            results[i] = {
                "index": i,
                "status": 200,
                "experts": outcome.experts,
                "response": outcome.response.model_dump(exclude_none=True),
            }

    replies: dict[int, dict[str, ExpertReply]] = {i: {} for i in aggregated}
    dropped: dict[int, list[dict[str, str]]] = {i: [] for i in aggregated}

    async def candidate_call(expert_id: str, i: int) -> None:
        try:
            replies[i][expert_id] = await steps.call(expert_id, plans[i])
        except Exception as exc:
            dropped[i].append(dropped_entry(expert_id, exc))

    async def finish(i: int) -> None:
        plan = plans[i]
        fan = FanoutResult([replies[i][e] for e in plan.aggregate_over if e in replies[i]], dropped[i])
        answered(i, await settle(steps.finish(plan, fan)))

    for expert_id in order:
        single = singles.get(expert_id, [])
        single_outcomes, _ = await asyncio.gather(
            asyncio.gather(*(settle(steps.execute(plans[i])) for i in single)),
            asyncio.gather(*(candidate_call(expert_id, i) for i in candidates.get(expert_id, []))),
        )
        for i, outcome in zip(single, single_outcomes):
            answered(i, outcome)
        if expert_id == synthesizer:  # every candidate phase has run, this one included
            await asyncio.gather(*(finish(i) for i in sorted(aggregated)))
    if synthesizer is None:  # merging by vote calls no expert
        await asyncio.gather(*(finish(i) for i in sorted(aggregated)))
    stats = {
        "requests": len(items),
        # One phase per expert, in the order they ran: the items it answered alone, its calls as a
        # candidate of aggregated items, and, for the synthesizer, the answers it wrote.
        "groups": [
            {
                "expert": e,
                "size": work[e],
                "answered": len(singles.get(e, [])),
                "candidate_calls": len(candidates.get(e, [])),
                "syntheses": len(aggregated) if e == synthesizer else 0,
            }
            for e in order
        ],
        "loads": record.loads,
        "offloads": record.offloads,
        "switch_seconds": round(record.switch_seconds, 4),
        "queue_wait_seconds": round(record.queue_wait_seconds, 4),
        "load_order": list(record.load_log),
        "seconds": round(time.perf_counter() - started, 4),
    }
    return {"object": "batch.result", "results": results, "stats": stats}


async def settle(outcome: Awaitable[ChatOutcome]) -> ChatOutcome | BaseException:
    try:
        return await outcome
    except Exception as exc:
        return exc
