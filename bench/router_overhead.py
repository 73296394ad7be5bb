"""What the router adds to a request, against the floor set by embedding the prompt.

Prints, on the same prompts within one run:
  (a) with --endpoint: latency straight to an expert (model=<id>) vs through the router (model="coe"),
      each prompt sent to the expert the router picked for it; p50/p99 and their difference;
  (b) routing decisions per second of RouterService alone (instant fake experts) at concurrency
      1, 8, 32, 128, with the real embedder and the fitted artifact;
  (c) embedding time alone at the same batch sizes;
and ratios that compare across machines: decision time at concurrency 1 / one embedding call (medians,
measured in turns on the same prompts), and the rate at concurrency 32 / the embedding floor.

    python bench/router_overhead.py --artifact models/routers/category.joblib \
        --dataset eval/data/zoo_heldout.jsonl [--endpoint http://127.0.0.1:8000] [--no-cache]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx
import numpy as np
from bench_machine import describe  # bench/ is on sys.path when a script runs

LEVELS = (1, 8, 32, 128)


def load_prompts(path: str, limit: int) -> list[str]:
    from router_service.data.loaders import read_jsonl

    rows = [row for _, row in read_jsonl(path)]
    prompts = [r.get("prompt") or r["messages"][-1]["content"] for r in rows]
    return (prompts * (limit // max(len(prompts), 1) + 1))[:limit] if prompts else []


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000


def endpoint_latency(endpoint: str, prompts: list[str], max_tokens: int) -> dict:
    base = endpoint.rstrip("/")
    routed, direct = [], []
    with httpx.Client(timeout=120) as client:
        for prompt in prompts:
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
            started = time.perf_counter()
            r = client.post(f"{base}/v1/chat/completions", json={**body, "model": "coe"})
            routed.append(time.perf_counter() - started)
            expert = r.headers["x-coe-experts"].split(",")[0]
            started = time.perf_counter()
            client.post(f"{base}/v1/chat/completions", json={**body, "model": expert})
            direct.append(time.perf_counter() - started)
    return {
        "n": len(prompts),
        "direct_ms": {"p50": percentile(direct, 50), "p99": percentile(direct, 99)},
        "routed_ms": {"p50": percentile(routed, 50), "p99": percentile(routed, 99)},
        "overhead_ms": {
            "p50": percentile(routed, 50) - percentile(direct, 50),
            "p99": percentile(routed, 99) - percentile(direct, 99),
        },
    }


def build_service(artifact: str, cache: bool, backend: str):
    from router_service.config.service import parse_service_config
    from router_service.experts.fake import FakeExpertBackend
    from router_service.routing.artifact import load_artifact, read_artifact_info
    from router_service.routing.embedding import make_embedder
    from router_service.serving.service import RouterService

    recorded = read_artifact_info(artifact).get("embedder")
    strategy = load_artifact(artifact, embedder=make_embedder(recorded, backend=backend) if recorded else None)
    experts = strategy.fitted_experts or read_artifact_info(artifact)["fitted_experts"]
    config = parse_service_config(
        {
            "experts": [{"id": e, "model": f"org/{e}"} for e in experts],
            "router": {"strategy": strategy.name, "embedding_cache_size": 4096 if cache else 0},
        }
    )
    backends = {e: FakeExpertBackend(e) for e in experts}
    return RouterService(config, backends, {strategy.name: strategy}), strategy


async def decisions_per_second(service, prompts: list[str], concurrency: int) -> float:
    from router_service.api.schema import ChatCompletionRequest

    requests = [
        ChatCompletionRequest.model_validate({"model": "coe", "messages": [{"role": "user", "content": p}]})
        for p in prompts
    ]
    semaphore = asyncio.Semaphore(concurrency)

    async def one(request):
        async with semaphore:
            await service.decide(request)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    return len(requests) / (time.perf_counter() - started)


async def side_by_side_c1(service, embedder, prompts: list[str]) -> tuple[float, float]:
    """Median ms of one embedding call and of one routing decision at concurrency 1, taken in turns on
    the same prompts (each with its own suffix, so no cache helps), so machine load hits both alike."""
    from router_service.api.schema import ChatCompletionRequest

    embed_s, decide_s = [], []
    for i, prompt in enumerate(prompts):
        started = time.perf_counter()
        embedder.encode([f"{prompt} [e{i}]"])
        embed_s.append(time.perf_counter() - started)
        request = ChatCompletionRequest.model_validate(
            {"model": "coe", "messages": [{"role": "user", "content": f"{prompt} [d{i}]"}]}
        )
        started = time.perf_counter()
        await service.decide(request)
        decide_s.append(time.perf_counter() - started)
    return statistics.median(embed_s) * 1000, statistics.median(decide_s) * 1000


def embedding_times(embedder, prompts: list[str]) -> dict[int, float]:
    out = {}
    for size in LEVELS:
        batches = [prompts[i : i + size] for i in range(0, min(len(prompts), max(size * 4, 64)), size)]
        batches = [b for b in batches if len(b) == size] or [prompts[:size]]
        started = time.perf_counter()
        for batch in batches:
            embedder.encode(batch)
        out[size] = (time.perf_counter() - started) / sum(len(b) for b in batches) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", default="models/routers/category.joblib")
    parser.add_argument("--dataset", default="eval/data/zoo_heldout.jsonl")
    parser.add_argument("--requests", type=int, default=512, help="decisions per concurrency level")
    parser.add_argument("--endpoint", help="a running deployment for (a)")
    parser.add_argument("--endpoint-requests", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--no-cache", action="store_true", help="turn the embedding cache off for (b)")
    from router_service.config.service import RouterConfig

    default_backend = RouterConfig.model_fields["embedder_backend"].default
    parser.add_argument(
        "--embedder-backend", default=default_backend, help=f"torch, onnx, onnx-int8, openvino, ... ({default_backend})"
    )
    args = parser.parse_args()

    prompts = load_prompts(args.dataset, args.requests)
    # Distinct prompts, so the embedding cache cannot hide the embedding cost unless asked to.
    unique = [f"{p} (#{i})" for i, p in enumerate(prompts)]
    service, strategy = build_service(args.artifact, cache=not args.no_cache, backend=args.embedder_backend)
    embedder = strategy.embedder
    embedder.encode(["warm-up"])  # load the model outside the timings

    result: dict = {
        "machine": describe(),
        "artifact": args.artifact,
        "strategy": strategy.name,
        "embedder": embedder.name,
        "embedder_backend": args.embedder_backend,
    }
    emb = embedding_times(embedder, unique)
    result["embedding_ms_per_prompt"] = {str(k): round(v, 3) for k, v in emb.items()}
    rates = {}
    for level in LEVELS:
        fresh = [f"{p} [c{level}]" for p in unique]
        rates[level] = asyncio.run(decisions_per_second(service, fresh, level))
    result["decisions_per_second"] = {str(k): round(v, 1) for k, v in rates.items()}
    one_embed_ms, decision_ms_c1 = asyncio.run(side_by_side_c1(service, embedder, unique[:200]))
    result["one_embedding_ms"] = round(one_embed_ms, 3)
    result["decision_ms_at_c1"] = round(decision_ms_c1, 3)
    result["ratio_decision_c1_over_one_embedding"] = round(decision_ms_c1 / one_embed_ms, 3)
    result["ratio_rate_c32_over_embedding_floor_c32"] = round(rates[32] / (1000 / emb[32]), 3)
    if args.endpoint:
        result["endpoint"] = endpoint_latency(args.endpoint, prompts[: args.endpoint_requests], args.max_tokens)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
