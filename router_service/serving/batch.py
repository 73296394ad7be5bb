"""Group a batch by assigned expert and order the groups so each expert is loaded at most once.

Resident experts go first (no load, and they are then free to be evicted); the rest follow, each
loaded once for its whole group. With budget R and E needed experts, the loads are the number of
needed experts that were not resident: the minimum any order can achieve.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Sequence


def group_by_expert(assignments: Sequence[str | None]) -> "OrderedDict[str, list[int]]":
    """expert id → indices of the batch items assigned to it (None = item failed before routing)."""
    groups: OrderedDict[str, list[int]] = OrderedDict()
    for index, expert_id in enumerate(assignments):
        if expert_id is not None:
            groups.setdefault(expert_id, []).append(index)
    return groups


def order_groups(groups: "OrderedDict[str, list[int]]", resident: Iterable[str]) -> list[tuple[str, list[int]]]:
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
