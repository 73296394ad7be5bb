"""vLLM CPU engine start and generation time, as the stack's experts start engines, per variant.

    python bench/engine_start.py MODEL_DIR MAX_LEN [--variants eager eager-worker-process compiled]

    python bench/engine_start.py models/smollm2-135m-instruct 1024
    python bench/engine_start.py models/zoo/math 128 --variants eager eager-worker-process

Variants (each runs in a fresh Python process, one after the other, so its imports count):
- `eager`: what `deployments/coe.yaml` serves on CPU: `enforce_eager=True`, with the replica environment
  of `deployments/app.py` (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: the model runs inside the engine-core
  process);
- `eager-worker-process`: the same with vLLM's CPU default, `VLLM_ENABLE_V1_MULTIPROCESSING=1`, where
  the model runs in a third process (a multiproc-executor worker) that imports torch and vLLM again;
- `compiled`: torch.compile (no `enforce_eager`), in the served environment.

Prints one line per variant: the process's wall time from start to exit, its CPU seconds (its own
and its children's), the engine start, 16 chat prompts × 32 tokens, and two answers. Compare the
variants of one run; an absolute time depends on the machine and what else runs. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from deployments.engine_args import CPU_ENGINE_ENV  # the CPU replicas' environment, as served
from router_service.domain import ExpertRequest, GenerationParams, Message

VARIANTS: dict[str, tuple[bool, str]] = {  # name -> (enforce_eager, VLLM_ENABLE_V1_MULTIPROCESSING)
    "eager": (True, "0"),
    "eager-worker-process": (True, "1"),
    "compiled": (False, "0"),
}
PROMPTS = ["What is 37+45?", "What is the capital of France?"] * 8


async def _measure(model: str, max_len: int, eager: bool) -> dict[str, Any]:
    """Start and ask through the experts' own backend, so the bench measures the served code path."""
    # Imported before the clock: "engine start" excludes the import; the process columns include it.
    import vllm.v1.engine.async_llm  # noqa: F401

    from deployments.vllm_backend import VLLMEngineBackend

    engine_args = {"dtype": "float32", "max_model_len": max_len, "max_num_seqs": 16, "enforce_eager": eager}
    backend = VLLMEngineBackend("bench", model, engine_args)
    started = time.time()
    backend.start()
    start_s = time.time() - started

    async def answer(i: int, prompt: str) -> str:
        request = ExpertRequest(str(i), [Message("user", prompt)], GenerationParams(max_tokens=32))
        return (await backend.chat(request)).text

    started = time.time()
    answers = await asyncio.gather(*(answer(i, p) for i, p in enumerate(PROMPTS)))
    generate_s = time.time() - started
    backend.shutdown()
    return {"start_s": start_s, "generate_s": generate_s, "answers": answers[:2]}


def _child(model: str, max_len: int, variant: str) -> None:
    result = asyncio.run(_measure(model, max_len, VARIANTS[variant][0]))
    print("RESULT " + json.dumps(result), flush=True)


def _run_variant(model: str, max_len: int, variant: str) -> str:
    env = {**os.environ, **CPU_ENGINE_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": VARIANTS[variant][1]}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, model, str(max_len), "--child", variant],
        env=env,
        capture_output=True,
        text=True,
    )
    wall_s = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return f"{variant:22s} failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
    r = json.loads(lines[-1][len("RESULT ") :])
    return (
        f"{variant:22s} process {wall_s:6.1f} s wall, {cpu_s:6.1f} s CPU | engine start {r['start_s']:6.1f} s | "
        f"16 prompts x 32 tokens {r['generate_s']:5.2f} s | {r['answers']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("max_len", type=int)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["eager", "eager-worker-process"])
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.model, args.max_len, args.child)
        return
    print(f"{args.model}, max_model_len {args.max_len}, {os.cpu_count()} CPUs")
    for variant in args.variants:
        print(_run_variant(args.model, args.max_len, variant), flush=True)


if __name__ == "__main__":  # vLLM spawns its engine-core process, which imports this module again
    main()
