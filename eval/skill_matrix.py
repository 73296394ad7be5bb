"""Skill matrix of the default composition, served through vLLM: every expert on every category.

    python -m eval.skill_matrix [--experts math=models/zoo/math ... general=models/smollm2-135m-instruct]
                                [--dataset eval/data/zoo_heldout.jsonl] [--out DIR]

Each expert (default: the four zoo specialists and the SmolLM2 generalist of coe.yaml) is loaded with
the offline engine `vllm.LLM(model=dir, dtype="float32", max_model_len=512 (or the model's own maximum),
enforce_eager=True, ...)`, one at a time, and
answers every prompt of the dataset through `llm.chat` (its own chat template), greedily, with the
online eval's reply budget (32 tokens). Each row is graded with its own "grader" (the zoo's test set
uses "contains", the rule of the builds' quality records), else "auto". Prints a markdown matrix
experts × categories and writes `results.json` (accuracies, per-prompt predictions, engine arguments
and timings) to `--out`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router_service.data.loaders import read_jsonl

DEFAULT_ENGINE_ARGS: dict[str, Any] = {
    "dtype": "float32",
    "max_model_len": 512,
    "max_num_seqs": 64,
    "seed": 0,
    "enforce_eager": True,  # as coe.yaml serves them (no torch.compile: engines start several times faster)
}
DEFAULT_EXPERTS = {
    "math": "models/zoo/math",
    "strings": "models/zoo/strings",
    "units": "models/zoo/units",
    "atlas": "models/zoo/atlas",
    "general": "models/smollm2-135m-instruct",
}


def load_dataset(path: str | Path) -> list[dict[str, str]]:
    rows = []
    for number, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        for key in ("prompt", "category"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{path}:{number}: '{key}' must be a string")
        if not isinstance(row.get("answer"), (str, list)):
            raise ValueError(f"{path}:{number}: 'answer' must be a string or a list of strings")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def find_experts(specs: Sequence[str] | None) -> dict[str, Path]:
    experts = dict(item.split("=", 1) for item in specs) if specs else DEFAULT_EXPERTS
    missing = {e: d for e, d in experts.items() if not (Path(d) / "config.json").exists()}
    if missing:
        raise SystemExit(
            f"error: no built model for {missing}; start the default deployment once, or run "
            "`python -m zoo build` and `python -m zoo.gguf build`"
        )
    return {e: Path(d) for e, d in experts.items()}


def run_expert(
    model_dir: Path, prompts: Sequence[str], engine_args: dict[str, Any], max_tokens: int
) -> tuple[list[str], float, float]:
    """Greedy chat answers of one expert; returns (answers, engine start seconds, generate seconds)."""
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=str(model_dir), **engine_args)
    start_s = time.perf_counter() - started
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    conversations: list[Any] = [[{"role": "user", "content": p}] for p in prompts]
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    gen_s = time.perf_counter() - started
    answers = [out.outputs[0].text for out in outputs]
    del llm, outputs
    gc.collect()
    return answers, start_s, gen_s


def markdown_matrix(accuracy: dict[str, dict[str, float]], skills: Sequence[str], counts: dict[str, int]) -> str:
    header = "| expert | " + " | ".join(f"{s} (n={counts[s]})" for s in skills) + " | mean |"
    lines = [header, "|---|" + "---:|" * (len(skills) + 1)]
    for expert, row in accuracy.items():
        mean = sum(row[s] for s in skills) / len(skills)
        lines.append(f"| {expert} | " + " | ".join(f"{row[s]:.2f}" for s in skills) + f" | {mean:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.skill_matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="eval/data/zoo_heldout.jsonl")
    parser.add_argument("--out", default="out/skill_matrix", metavar="DIR")
    parser.add_argument(
        "--experts",
        nargs="+",
        default=None,
        metavar="ID=MODEL_DIR",
        help="experts to measure (default: the five of coe.yaml)",
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=DEFAULT_ENGINE_ARGS["max_model_len"])
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    rows = load_dataset(args.dataset)
    skills = list(dict.fromkeys(r["category"] for r in rows))
    counts = {s: sum(r["category"] == s for r in rows) for s in skills}
    experts = find_experts(args.experts)
    engine_args = {**DEFAULT_ENGINE_ARGS, "max_model_len": args.max_model_len}
    prompts = [r["prompt"] for r in rows]

    accuracy: dict[str, dict[str, float]] = {}
    details: dict[str, Any] = {}
    from router_service.routing.grading import is_correct

    for expert, model_dir in experts.items():
        # The specialists know 128 positions, the generalist 8192: never ask a model for more than it has.
        positions = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings")
        own_args = {**engine_args, "max_model_len": min(engine_args["max_model_len"], positions or 10**9)}
        answers, start_s, gen_s = run_expert(model_dir, prompts, own_args, args.max_tokens)
        correct = [is_correct(a, r["answer"], r.get("grader", "auto")) for a, r in zip(answers, rows)]
        accuracy[expert] = {
            s: round(sum(c for c, r in zip(correct, rows) if r["category"] == s) / counts[s], 4) for s in skills
        }
        details[expert] = {
            "engine_start_s": round(start_s, 1),
            "generate_s": round(gen_s, 2),
            "predictions": answers,
            "correct": correct,
        }
        print(
            f"[skill_matrix] {expert}: start {start_s:.0f}s, {len(prompts)} prompts in {gen_s:.1f}s: "
            + ", ".join(f"{s} {a:.2f}" for s, a in accuracy[expert].items()),
            file=sys.stderr,
            flush=True,
        )

    table = markdown_matrix(accuracy, skills, counts)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "dataset": str(args.dataset),
        "experts_dirs": {e: str(d) for e, d in experts.items()},
        "engine_args": engine_args,
        "sampling": {"temperature": 0.0, "max_tokens": args.max_tokens},
        "metric": "each row's grader (router_service.routing.grading.is_correct)",
        "skills": skills,
        "counts": counts,
        "accuracy": accuracy,
        "markdown": table,
        "prompts": prompts,
        "answers": [r["answer"] for r in rows],
        "categories": [r["category"] for r in rows],
        "experts": details,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "skill_matrix.md").write_text(table + "\n")
    print(f"wrote {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
