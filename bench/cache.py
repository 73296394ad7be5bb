"""The semantic cache on the running stack: latency of a hit against a miss, and the hit rate, on a
workload with repeats. Prints; gates nothing.

The workload draws prompts from a held-out set, one half for plain requests and the other for streamed.
Each request is, at random (seeded): a prompt not sent before, an exact repeat of one that was, or a
near-duplicate of one (lower-cased, punctuation dropped). A "new" prompt that hits is a false hit:
the cache took it for a different prompt it had seen.
Requests go one at a time, so each latency is the request's own; streamed requests are timed to the
end of the stream. A response's `routing.cache` says whether it was a hit.

    serve run deployments/coe.yaml &      # the default stack, until /health is ok
    python bench/cache.py --enable-cache  # redeploys the router application with gateway.cache on

`--enable-cache` runs `serve deploy` with a copy of the deployment file whose router application has
the cache off, then on (so the run starts from an empty cache): only the router application changes,
the experts stay up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml
from bench_machine import describe  # bench/ is on sys.path when a script runs


def load_prompts(path: str) -> list[str]:
    from router_service.data.loaders import read_jsonl

    rows = [row for _, row in read_jsonl(path)]
    return [r.get("prompt") or r["messages"][-1]["content"] for r in rows]


def near_duplicate(prompt: str) -> str:
    return re.sub(r"[?.!,]", "", prompt).lower().strip()


def workload(prompts: list[str], n: int, repeat: float, near: float, seed: int) -> list[tuple[str, str]]:
    """(kind, prompt) pairs: kind is new, repeat or near."""
    rng = random.Random(seed)
    fresh = prompts[:]
    rng.shuffle(fresh)
    sent: list[str] = []
    out: list[tuple[str, str]] = []
    for _ in range(n):
        roll = rng.random()
        if sent and roll < repeat:
            out.append(("repeat", rng.choice(sent)))
        elif sent and roll < repeat + near:
            out.append(("near", near_duplicate(rng.choice(sent))))
        elif fresh:
            prompt = fresh.pop()
            sent.append(prompt)
            out.append(("new", prompt))
    return out


def deploy_router(config_path: str, cache: dict | None) -> None:
    """`serve deploy` the deployment file with the router application's `gateway.cache` set to `cache`
    (None: as in the file). Only the router application changes; the experts stay up."""
    config = yaml.safe_load(Path(config_path).read_text())
    if cache is not None:
        router = next(a for a in config["applications"] if a["import_path"].endswith("build_router_app"))
        router.setdefault("args", {}).setdefault("gateway", {})["cache"] = cache
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir=".") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    print(f"serve deploy {config_path} with gateway.cache {cache}", file=sys.stderr)
    try:
        # A cluster that `serve run` started has token auth on; the CLI sends the token only when told to.
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
        subprocess.run(["serve", "deploy", out.name], check=True, env=env, stdout=subprocess.DEVNULL)
    finally:
        Path(out.name).unlink()


def wait_for_cache(client: httpx.Client, enabled: bool, deadline_s: float) -> None:
    """Until the router answers with (or without) a `routing.cache` field: the redeployed replica serves."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            r = client.post("/v1/chat/completions", json=request_body("ping", 1, False))
            if r.status_code == 200 and ("cache" in r.json().get("routing", {})) == enabled:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"the router did not come back with the cache {'on' if enabled else 'off'}")


def request_body(prompt: str, max_tokens: int, stream: bool) -> dict:
    return {
        "model": "coe",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }


def send(client: httpx.Client, prompt: str, max_tokens: int, stream: bool) -> tuple[float, str]:
    started = time.perf_counter()
    if not stream:
        r = client.post("/v1/chat/completions", json=request_body(prompt, max_tokens, False))
        r.raise_for_status()
        return time.perf_counter() - started, r.json()["routing"].get("cache", "off")
    cache = "off"
    with client.stream("POST", "/v1/chat/completions", json=request_body(prompt, max_tokens, True)) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {") and '"routing"' in line:
                cache = json.loads(line[6:]).get("routing", {}).get("cache", cache)
    return time.perf_counter() - started, cache


def summary(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds) * 1000
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", default="http://127.0.0.1:8000")
    parser.add_argument("--dataset", default="eval/data/zoo_heldout.jsonl")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeat", type=float, default=0.3, help="share of exact repeats")
    parser.add_argument("--near", type=float, default=0.2, help="share of near-duplicates")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--enable-cache", action="store_true")
    parser.add_argument("--config", default="deployments/coe.yaml")
    parser.add_argument("--threshold", type=float, default=0.95)
    args = parser.parse_args()

    results: dict = {"machine": describe(), "requests": args.requests, "repeat": args.repeat, "near": args.near}
    with httpx.Client(base_url=args.endpoint, timeout=300) as client:
        if args.enable_cache:
            # Off, then on: the run starts from an empty cache whatever ran before.
            deploy_router(args.config, {"enabled": False})
            wait_for_cache(client, False, 600)
            deploy_router(args.config, {"enabled": True, "similarity_threshold": args.threshold})
        wait_for_cache(client, True, 600)
        prompts = load_prompts(args.dataset)
        random.Random(args.seed).shuffle(prompts)
        halves = {False: prompts[: len(prompts) // 2], True: prompts[len(prompts) // 2 :]}
        for stream in (False, True):
            # Disjoint prompts per mode: the streamed run must not start with the first run's answers.
            plan = workload(halves[stream], args.requests, args.repeat, args.near, args.seed)
            by_cache: dict[str, list[float]] = {"hit": [], "miss": []}
            by_kind: dict[str, list[str]] = {"new": [], "repeat": [], "near": []}
            for kind, prompt in plan:
                seconds, cache = send(client, prompt, args.max_tokens, stream)
                by_cache.setdefault(cache, []).append(seconds)
                by_kind[kind].append(cache)
            hit, miss = summary(by_cache["hit"]), summary(by_cache["miss"])
            results["stream" if stream else "plain"] = {
                "hit": hit,
                "miss": miss,
                "miss_over_hit_p50": round(miss["p50_ms"] / hit["p50_ms"], 1) if hit["n"] and miss["n"] else None,
                "hit_rate": round(len(by_cache["hit"]) / max(len(plan), 1), 3),
                "hit_rate_by_kind": {k: round(v.count("hit") / len(v), 3) if v else None for k, v in by_kind.items()},
                "hit_mean_ms": round(statistics.mean(by_cache["hit"]) * 1000, 2) if by_cache["hit"] else None,
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
