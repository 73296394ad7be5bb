"""Which dtype should the real generalist (SmolLM2-135M-Instruct) be saved and served in, on vLLM CPU?

Converts the GGUF (zoo.gguf) into one HF folder per dtype (cached: models/<name> for the spec's dtype,
models/<name>-<dtype> for the others), serves each with vLLM offline (`vllm.LLM(..., dtype=D,
max_model_len=512)`, one engine per subprocess so each is torn down completely), asks every
question of the general candidate pool (zoo.general.CANDIDATES, before any filtering, so neither
dtype is favoured) plus a few spot checks and 30 held-out prompts of each zoo skill, greedy
(temperature 0, max_tokens 32, chat template, no system prompt), and prints the accuracy per dtype
under zoo.general.is_correct_general, the speed, and the machine. Prints, never asserts.

    VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python bench/generalist_dtype.py [--dtypes float32 bfloat16]
        [--models-root models] [--skills-n 30] [--json results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_machine import cpu_model  # noqa: E402  (bench/ is on sys.path when a script runs)

from zoo import general, tasks  # noqa: E402  (pure Python, cheap)
from zoo.gguf import build_gguf, get_gguf_spec  # noqa: E402

MODEL = "smollm2-135m-instruct"
SPOT_CHECKS = (  # (prompt, accepted answers or None when only the text is shown)
    ("What is the capital of France?", ["Paris"]),
    ("Write a haiku about the sea.", None),
    ("What is 37+45?", ["82"]),
)


def prompt_set(skills_n: int) -> list[dict]:
    items: list[dict[str, Any]] = [
        {"group": "pool", "topic": q.topic, "prompt": q.prompt, "answers": list(q.answers)} for q in general.CANDIDATES
    ]
    items += [{"group": "spot", "topic": "spot", "prompt": p, "answers": a} for p, a in SPOT_CHECKS]
    for skill in tasks.SKILLS:
        items += [
            {"group": "skill", "topic": skill, "prompt": ex.prompt, "answers": [ex.answer]}
            for ex in tasks.generate(skill, skills_n, split="heldout")
        ]
    return items


def worker(model_dir: str, dtype: str, items_path: str, result_path: str) -> None:
    """Runs in its own process: one vLLM engine, every prompt once, results to `result_path`."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    items = json.loads(Path(items_path).read_text())
    started = time.perf_counter()
    llm = LLM(model=model_dir, dtype=cast(Any, dtype), max_model_len=512, seed=0)
    start_s = time.perf_counter() - started
    params = SamplingParams(temperature=0.0, max_tokens=32)
    conversations: Any = [[{"role": "user", "content": it["prompt"]}] for it in items]
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    gen_s = time.perf_counter() - started
    # Single-stream decode speed: one haiku, 64 tokens, after a warm-up (the batch above).
    one: Any = [[{"role": "user", "content": "Write a haiku about the sea."}]]
    started = time.perf_counter()
    single = llm.chat(one, SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True), use_tqdm=False)
    single_s = time.perf_counter() - started
    single_tok_s = len(single[0].outputs[0].token_ids) / single_s
    # The spot checks once more, each alone (batch of 1): answers must not depend on the batch.
    alone = {
        p: llm.chat(cast(Any, [[{"role": "user", "content": p}]]), params, use_tqdm=False)[0].outputs[0].text
        for p, _ in SPOT_CHECKS
    }
    for it, out in zip(items, outputs):
        it["prediction"] = out.outputs[0].text
        it["tokens"] = len(out.outputs[0].token_ids)
        it["correct"] = None if it["answers"] is None else general.is_correct_general(it["prediction"], it["answers"])
    Path(result_path).write_text(
        json.dumps(
            {
                "engine_start_s": start_s,
                "generate_s": gen_s,
                "single_stream_tok_s": single_tok_s,
                "alone": alone,
                "load_avg": os.getloadavg(),
                "items": items,
            }
        )
    )


def run_dtype(model_dir: Path, dtype: str, items: list[dict]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        items_path, result_path = Path(tmp) / "items.json", Path(tmp) / "result.json"
        items_path.write_text(json.dumps(items))
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        cmd = [sys.executable, __file__, "--worker", str(model_dir), dtype, str(items_path), str(result_path)]
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0 or not result_path.exists():
            print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n")
            raise SystemExit(f"vLLM worker for {dtype} failed (rc {proc.returncode})")
        result = json.loads(result_path.read_text())
    result["wall_s"] = wall
    return result


def print_progress(dtype: str, message: str) -> None:
    print(f"[gguf {dtype}] {message}", flush=True)


def fraction(counts: tuple[int, int]) -> str:
    return f"{counts[0]}/{counts[1]}"


def accuracy(items: list[dict], group: str, topic: str | None = None) -> tuple[int, int]:
    chosen = [
        it
        for it in items
        if it["group"] == group and (topic is None or it["topic"] == topic) and it["correct"] is not None
    ]
    return sum(it["correct"] for it in chosen), len(chosen)


def report(dtype: str, build_s: float, result: dict) -> None:
    items = result["items"]
    right, n = accuracy(items, "pool")
    print(
        f"\n=== {dtype}: pool accuracy {right}/{n} = {right / n:.3f}   (conversion {build_s:.1f}s, "
        f"engine start {result['engine_start_s']:.1f}s, generate {result['generate_s']:.1f}s for "
        f"{len(items)} prompts / {sum(it['tokens'] for it in items)} tokens = "
        f"{sum(it['tokens'] for it in items) / result['generate_s']:.0f} tok/s batched, "
        f"{result['single_stream_tok_s']:.0f} tok/s single stream, worker wall {result['wall_s']:.1f}s, "
        f"load average {result['load_avg'][0]:.1f} at the end)"
    )
    topics = sorted({it["topic"] for it in items if it["group"] == "pool"})
    print("  by topic: " + ", ".join(f"{t} {fraction(accuracy(items, 'pool', t))}" for t in topics))
    print(
        "  zoo skills (held-out, same grader): "
        + ", ".join(f"{s} {fraction(accuracy(items, 'skill', s))}" for s in tasks.SKILLS)
    )
    for it in items:
        if it["group"] == "spot":
            mark = "" if it["correct"] is None else (" [correct]" if it["correct"] else " [WRONG]")
            print(f"  {it['prompt']!r}{mark} -> {it['prediction']!r}")
            alone = result["alone"][it["prompt"]]
            if alone != it["prediction"]:
                ok = (
                    ""
                    if it["answers"] is None
                    else (" [correct]" if general.is_correct_general(alone, it["answers"]) else " [WRONG]")
                )
                print(f"      asked alone{ok} -> {alone!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--models-root", default=str(REPO / "models"))
    parser.add_argument("--skills-n", type=int, default=30)
    parser.add_argument("--json", default=None, help="also write every prediction here")
    args = parser.parse_args(argv)

    import torch  # only for the thread count printed with the machine

    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}, torch threads {torch.get_num_threads()}, "
        f"VLLM_CPU_KVCACHE_SPACE={os.environ.get('VLLM_CPU_KVCACHE_SPACE', '1')}"
    )
    items = prompt_set(args.skills_n)
    spec = get_gguf_spec(MODEL)
    results = {}
    for dtype in args.dtypes:
        # The spec's own dtype shares the folder `python -m zoo.gguf build` makes (no second copy).
        out = Path(args.models_root) / (MODEL if dtype == spec.dtype else f"{MODEL}-{dtype}")
        started = time.perf_counter()
        build_gguf(
            MODEL,
            out,
            spec=dataclasses.replace(spec, dtype=dtype),
            progress=functools.partial(print_progress, dtype),
        )
        build_s = time.perf_counter() - started
        print(f"[{dtype}] folder ready in {build_s:.1f}s: {out}; starting vLLM ...", flush=True)
        results[dtype] = run_dtype(out, dtype, items)
        results[dtype]["build_s"] = build_s
        report(dtype, build_s, results[dtype])

    if len(results) > 1:
        print("\n=== answers that differ between dtypes (pool and spot checks)")
        first, *rest = args.dtypes
        for i, it in enumerate(results[first]["items"]):
            if it["group"] == "skill":
                continue
            preds = {d: results[d]["items"][i] for d in args.dtypes}
            if any(p["prediction"] != it["prediction"] for p in preds.values()):
                marks = ", ".join(
                    f"{d}={'ok' if p['correct'] else ('-' if p['correct'] is None else 'WRONG')}"
                    for d, p in preds.items()
                )
                print(f"  {it['prompt']!r}: {marks}")
        print("\n| dtype | pool accuracy | France answer |")
        print("|---|---:|---|")
        for d, r in results.items():
            right, n = accuracy(r["items"], "pool")
            france = next(it["prediction"] for it in r["items"] if it["group"] == "spot")
            print(f"| {d} | {right}/{n} = {right / n:.3f} | {france!r} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"\nwrote every prediction to {args.json}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
    else:
        sys.exit(main())
