"""Expert loads and wall time for a mixed batch, grouped by expert vs in arrival order.

Two modes:
  fake (default): in-process RouterService over fake experts whose load takes --load-s seconds.
  --endpoint URL: a running deployment with `residency.max_resident_experts` < experts (e.g. the
                  CPU zoo, see deployments/coe-residency.yaml); grouped = one POST /v1/batch,
                  naive = the same requests one by one in arrival order. Loads come from /health.

    python bench/grouping.py --requests 24 --experts 4 --budget 2
    python bench/grouping.py --requests 16 --top-k2 8 --synthesize --experts 5 --budget 2
    python bench/grouping.py --endpoint http://127.0.0.1:8000 --requests 8 --top-k2 4
    (after `serve run deployments/coe-residency.yaml`, or coe-residency-synthesize.yaml, where the
    generalist merges every top_k=2 item and so must be loaded after both candidates)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

import httpx


def mixed_assignments(n: int, experts: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    order = [experts[i % len(experts)] for i in range(n)]
    rng.shuffle(order)
    return order


async def fake_mode(args) -> dict:
    from router_service.api.schema import ChatCompletionRequest
    from router_service.config.service import parse_service_config
    from router_service.experts.fake import OffloadableFakeExpert
    from router_service.serving.assembly import build_strategies
    from router_service.serving.batch import count_loads
    from router_service.serving.service import RouterService

    experts = [f"e{i}" for i in range(args.experts)]
    # The synthesizer is the last expert, not resident at start: it must run after every candidate.
    synthesizer = experts[-1] if args.synthesize else None
    config = parse_service_config(
        {
            "experts": [{"id": e, "model": f"org/{e}"} for e in experts],
            # keyword: a prompt naming k<i> goes to e<i>, so an item's two candidates are chosen by its text.
            "router": {
                "strategy": "keyword",
                "default_expert": experts[0],
                "rules": [{"expert": e, "keywords": [f"k{i}"]} for i, e in enumerate(experts)],
            },
            "aggregation": {"method": "synthesize", "aggregator": synthesizer} if synthesizer else {},
            "residency": {"max_resident_experts": args.budget, "load_window_s": 0.0},
        }
    )
    rng = random.Random(args.seed)
    assignments = mixed_assignments(args.requests, experts, args.seed)
    requests = [
        {"model": e, "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4}
        for i, e in enumerate(assignments)
    ]
    pairs = [rng.sample(range(len(experts) - (1 if synthesizer else 0)), 2) for _ in range(args.top_k2)]
    requests += [
        {
            "model": "coe",
            "messages": [{"role": "user", "content": f"q{i} k{a} k{b}"}],
            "max_tokens": 4,
            "routing": {"top_k": 2},
        }
        for i, (a, b) in enumerate(pairs)
    ]
    rng.shuffle(requests)
    needed = set(assignments) | {experts[a] for pair in pairs for a in pair} | ({synthesizer} if pairs else set())
    needed.discard(None)
    results: dict[str, Any] = {}
    for mode in ("grouped", "naive"):
        backends = {
            e: OffloadableFakeExpert(e, loaded=i < args.budget, load_delay_s=args.load_s) for i, e in enumerate(experts)
        }
        service = RouterService(config, backends, build_strategies(config))
        started = time.perf_counter()
        if mode == "grouped":
            batch = await service.batch(requests)
            errors = sum(r["status"] != 200 for r in batch["results"])
        else:
            errors = 0
            for r in requests:
                try:
                    await service.chat(ChatCompletionRequest.model_validate(r))
                except Exception:
                    errors += 1
        results[mode] = {
            "loads": service.residency.stats.loads,
            "seconds": round(time.perf_counter() - started, 3),
            "errors": errors,
        }
    results["items"] = {"one_expert": len(assignments), "top_k_2": len(pairs), "synthesizer": synthesizer}
    results["minimum_loads"] = len(needed - set(experts[: args.budget]))
    results["lru_arrival_loads_model"] = count_loads(assignments, experts[: args.budget], args.budget)
    return results


def endpoint_mode(args) -> dict:
    base = args.endpoint.rstrip("/")
    models = [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"] if m["id"] != "coe"]
    assignments = mixed_assignments(args.requests, models, args.seed)
    requests = [
        {"model": e, "messages": [{"role": "user", "content": f"What is {i}+{i}?"}], "max_tokens": 8}
        for i, e in enumerate(assignments)
    ]
    # Routed items asking two experts at once (the router picks both; its aggregation merges them).
    rng = random.Random(args.seed)
    requests += [
        {
            "model": "coe",
            "messages": [{"role": "user", "content": rng.choice(TWO_SKILL_PROMPTS).format(i=i)}],
            "max_tokens": 8,
            "routing": {"top_k": 2},
        }
        for i in range(args.top_k2)
    ]
    rng.shuffle(requests)

    def health() -> dict:
        return httpx.get(f"{base}/health", timeout=60).json()

    def loads() -> int:
        return health().get("residency", {}).get("loads", 0)

    results: dict[str, Any] = {}
    with httpx.Client(timeout=3600) as client:
        resident_at_start = set(health().get("resident", []))
        before = loads()
        started = time.perf_counter()
        batch = client.post(f"{base}/v1/batch", json={"requests": requests}).json()
        results["grouped"] = {
            "loads": loads() - before,
            "seconds": round(time.perf_counter() - started, 1),
            "batch_stats": batch["stats"],
            "errors": sum(r["status"] != 200 for r in batch["results"]),
        }
        before = loads()
        started = time.perf_counter()
        errors = sum(client.post(f"{base}/v1/chat/completions", json=r).status_code != 200 for r in requests)
        results["naive"] = {
            "loads": loads() - before,
            "seconds": round(time.perf_counter() - started, 1),
            "errors": errors,
        }
    # Every expert the batch ran (its answers, candidate calls, syntheses), from its own stats.
    needed = {g["expert"] for g in results["grouped"]["batch_stats"]["groups"]}
    results["items"] = {"one_expert": len(assignments), "top_k_2": args.top_k2}
    results["resident_at_start"] = sorted(resident_at_start)
    results["minimum_loads"] = len(needed - resident_at_start)
    return results


TWO_SKILL_PROMPTS = [
    "What is {i}+7? Also reverse the word planet.",
    "Convert {i} km to m, and what is the capital of Zulia?",
    "Reverse the word garden and convert {i} kg to g.",
    "What is the capital of Zulia? And what is {i}+5?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--load-s", type=float, default=0.2, help="simulated load time (fake mode)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k2", type=int, default=0, help="also this many routed items with top_k=2")
    parser.add_argument(
        "--synthesize",
        action="store_true",
        help="fake mode: top_k items merged by a synthesizer (endpoint mode: the deployment's aggregation decides)",
    )
    parser.add_argument("--endpoint", help="measure a running deployment instead of fakes")
    args = parser.parse_args()
    results = endpoint_mode(args) if args.endpoint else asyncio.run(fake_mode(args))
    print(json.dumps({"args": vars(args), **results}, indent=2))


if __name__ == "__main__":
    main()
