"""What the stack costs over vLLM's own server: bare `vllm serve`, the stack direct, the stack routed.

In one run, on one expert model, with the same prompts, concurrency levels and token budget:
  bare    `vllm serve <model>` (vLLM's OpenAI server), started here on --bare-port with the engine
          arguments the expert has in the deployment file;
  direct  the running stack with `model: <expert id>` (no routing);
  routed  the running stack with `model: coe` (routing picks the expert; prompts are the expert's own
          skill, and the share that really went to it is printed).
The three targets take turns at each level, in a rotating order, so a change in machine load hits all
three alike. Ray starts its workers at niceness 15 (`RAY_worker_niceness`), so the bare server runs at
the same niceness (`--bare-nice`): otherwise the scheduler alone would favour it over the stack, and
over the stack's idle engines, on shared cores. Prints ok/s, p50 and p99 per target and level, and the
ratios to the bare server. Gates nothing.

    serve run deployments/coe.yaml &   # the stack, until /health is ok
    python bench/vs_vllm.py [--expert math] [--levels 1,8,64] [--requests 128] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from bench_machine import describe  # bench/ is on sys.path when a script runs

PROMPTS = {
    "math": [f"What is {a}+{b}?" for a, b in [(17, 25), (9, 33), (40, 2), (61, 14), (28, 39), (12, 77), (55, 30)]],
    "strings": [f"Reverse the word {w}" for w in ("garden", "planet", "kettle", "window", "bridge")],
    "units": [f"Convert {n} km to m" for n in (2, 3, 5, 7, 9)],
}


def expert_app(config_path: str, expert: str) -> dict:
    import yaml

    from deployments.serve_config import load_serve_config

    load_serve_config(config_path)  # the file the stack runs must be valid
    for app in yaml.safe_load(Path(config_path).read_text())["applications"]:
        args = app.get("args") or {}
        if args.get("id") == expert:
            return args
    raise SystemExit(f"no expert application with id {expert!r} in {config_path}")


def start_bare(args: dict, port: int, log_path: Path, nice: int) -> subprocess.Popen:
    engine = args.get("engine") or {}
    cmd = ["nice", "-n", str(nice), sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    cmd += ["--model", args["model"]]
    cmd += ["--served-model-name", args["id"], "--host", "127.0.0.1", "--port", str(port)]
    for key, value in engine.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is not False:
            cmd += [flag, str(value)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}  # as the stack's CPU experts (deployments/app.py)
    return subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_healthy(url: str, proc: subprocess.Popen | None, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url}: not healthy within {deadline_s} s")


async def load(base: str, model: str, prompts: list[str], concurrency: int, total: int, max_tokens: int) -> dict:
    latencies: list[float] = []
    experts: dict[str, int] = {}
    failures = 0
    queue = list(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while queue:
            i = queue.pop()
            body = {
                "model": model,
                "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            started = time.perf_counter()
            try:
                response = await client.post(f"{base}/v1/chat/completions", json=body)
            except httpx.HTTPError:
                failures += 1
                continue
            if response.status_code != 200:
                failures += 1
                continue
            latencies.append(time.perf_counter() - started)
            chosen = response.headers.get("x-coe-experts")
            if chosen:
                experts[chosen] = experts.get(chosen, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    lat = np.asarray(latencies or [np.nan]) * 1000
    return {
        "ok": len(latencies),
        "failed": failures,
        "ok_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "experts": experts,
    }


def table(results: dict, levels: list[int]) -> str:
    lines = [
        "| concurrency | target | ok/s | p50 ms | p99 ms | ok/s ÷ bare | p50 − bare ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        bare = results[str(level)]["bare"]
        for target in ("bare", "direct", "routed"):
            r = results[str(level)][target]
            lines.append(
                f"| {level} | {target} | {r['ok_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['ok_per_s'] / bare['ok_per_s']:.2f} | {r['p50_ms'] - bare['p50_ms']:+.1f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="deployments/coe.yaml")
    parser.add_argument("--expert", default="math", choices=sorted(PROMPTS))
    parser.add_argument("--stack", default="http://127.0.0.1:8000")
    parser.add_argument("--bare-port", type=int, default=8100)
    parser.add_argument("--levels", default="1,8,64")
    parser.add_argument("--requests", type=int, default=128, help="requests per target and level")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--start-timeout", type=float, default=600)
    parser.add_argument("--bare-nice", type=int, default=15, help="niceness of the bare server (Ray's workers: 15)")
    parser.add_argument("--out", default="out/vs_vllm.json")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    app = expert_app(args.config, args.expert)
    wait_healthy(f"{args.stack}/health", None, args.start_timeout)
    bare_url = f"http://127.0.0.1:{args.bare_port}"
    log_path = Path(args.out).with_suffix(".vllm.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = start_bare(app, args.bare_port, log_path, args.bare_nice)
    try:
        wait_healthy(f"{bare_url}/health", proc, args.start_timeout)
        targets = {"bare": (bare_url, args.expert), "direct": (args.stack, args.expert), "routed": (args.stack, "coe")}
        prompts = PROMPTS[args.expert]
        for base, model in targets.values():  # one warm-up request each, outside the timings
            asyncio.run(load(base, model, prompts, 1, 2, args.max_tokens))
        results: dict = {}
        names = list(targets)
        for turn, level in enumerate(levels):
            results[str(level)] = {}
            for name in names[turn % 3 :] + names[: turn % 3]:  # bare first, then direct first, ...
                base, model = targets[name]
                total = max(args.requests, 4 * level)
                results[str(level)][name] = asyncio.run(load(base, model, prompts, level, total, args.max_tokens))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    report = {
        "machine": describe(),
        "expert": args.expert,
        "model": app["model"],
        "engine": app.get("engine"),
        "max_tokens": args.max_tokens,
        "bare_nice": args.bare_nice,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(
        f"machine: {report['machine']}; expert {args.expert} ({app['model']}), max_tokens {args.max_tokens}, "
        f"bare server niceness {args.bare_nice}"
    )
    print(table(results, levels))
    routed = {k: v for level in levels for k, v in results[str(level)]["routed"]["experts"].items()}
    print(f"routed requests answered by: {routed}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
