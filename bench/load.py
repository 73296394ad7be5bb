"""Loopback load test of a running CoE service: throughput, latency percentiles, 429s and errors.

Bounded by --requests and --duration; it only ever talks to the --endpoint you give (default loopback).

    python bench/load.py --endpoint http://127.0.0.1:8000 --concurrency 64 --requests 2000 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import httpx
import numpy as np

PROMPTS = [
    "What is 17+25?",
    "Reverse the word garden",
    "Convert 3 km to m",
    "What is the capital of Zorbia?",
    "What is 9+33?",
    "Reverse the word planet",
    "Convert 2 kg to g",
    "What is 40+2?",
]


async def run(
    endpoint: str, concurrency: int, total: int, duration_s: float, model: str, max_tokens: int, api_key: str | None
) -> dict:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + duration_s
    issued = 0
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < total and time.monotonic() < deadline:
            prompt = PROMPTS[issued % len(PROMPTS)]
            issued += 1
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
            started = time.perf_counter()
            try:
                response = await client.post(f"{endpoint}/v1/chat/completions", json=body)
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    ok = statuses.get("200", 0)
    return {
        "requests": sum(statuses.values()),
        "ok": ok,
        "rate_limited_429": statuses.get("429", 0),
        "server_errors_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
        "other": {k: v for k, v in statuses.items() if k not in ("200", "429") and not k.startswith("5")},
        "seconds": round(wall, 2),
        "throughput_ok_per_s": round(ok / wall, 2),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)) * 1000, 1),
            "p99": round(float(np.percentile(lat, 99)) * 1000, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--requests", type=int, default=500, help="per concurrency level")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per level, at most")
    parser.add_argument("--model", default="coe")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--api-key")
    args = parser.parse_args()
    endpoint = args.endpoint.rstrip("/")
    for level in args.concurrency:
        result = asyncio.run(
            run(endpoint, level, args.requests, args.duration, args.model, args.max_tokens, args.api_key)
        )
        print(json.dumps({"concurrency": level, **result}))


if __name__ == "__main__":
    main()
