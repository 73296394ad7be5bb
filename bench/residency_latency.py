"""Latency of requests to a resident expert while another expert is loading (fake experts, in-process).

The unit test (tests/unit/test_batching.py::test_resident_expert_is_not_held_back_by_a_load) proves the
behaviour without a clock: the load is held open and the resident request must still finish. This
script reports the numbers that test used to assert on wall time (bug 5): how long a resident request
takes while a --load-s load is in progress, next to the load itself. It prints; it never asserts.

    python bench/residency_latency.py --load-s 0.5 --requests 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time


async def measure(args) -> dict:
    from router_service.domain import ExpertRequest, GenerationParams, Message
    from router_service.experts.fake import OffloadableFakeExpert
    from router_service.serving.residency import ResidencyManager

    backends = {
        "general": OffloadableFakeExpert("general", loaded=True),
        "math": OffloadableFakeExpert("math", load_delay_s=args.load_s),
        "text": OffloadableFakeExpert("text"),
    }  # a third expert: budget 2 < 3, residency is on
    manager = ResidencyManager(backends, budget=2, load_window_s=args.window_s, initially_resident=["general"])
    request = ExpertRequest("r", [Message("user", "x")], GenerationParams(max_tokens=4))

    async def call(expert: str) -> float:
        started = time.perf_counter()
        async with manager.use(expert):
            await backends[expert].chat(request)
        return time.perf_counter() - started

    loading = asyncio.create_task(call("math"))
    await asyncio.sleep(0)  # the load has started
    resident = []
    for _ in range(args.requests):
        resident.append(await call("general"))
    during_load = not loading.done()
    load_seconds = await loading
    return {
        "load_seconds": round(load_seconds, 4),
        "resident_requests_finished_during_load": during_load,
        "resident_ms": {"median": round(1000 * statistics.median(resident), 3), "max": round(1000 * max(resident), 3)},
        "loads": manager.stats.loads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load-s", type=float, default=0.5, help="simulated load time of the other expert")
    parser.add_argument("--window-s", type=float, default=0.0, help="residency load window")
    parser.add_argument("--requests", type=int, default=20, help="resident requests sent during the load")
    args = parser.parse_args()
    print(json.dumps({"args": vars(args), **asyncio.run(measure(args))}, indent=2))


if __name__ == "__main__":
    main()
