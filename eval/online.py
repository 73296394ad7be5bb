"""Online eval: send a dataset to a running CoE service over HTTP, grade, and summarise.

Each dataset line is JSON: {"messages": [...]} or {"prompt": "..."}, plus "answer" (a string, or a
list of accepted answers), optional "category", and optional "grader" (one of
`router_service.routing.grading.GRADERS`), which overrides the run's grader for that row. Every model in
`models` ("coe" and/or expert ids) answers every prompt; the oracle
(a prompt counts as solved when any single expert solved it) is computed when ≥ 2 experts ran.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.grading import GRADERS, is_correct
from router_service.data.loaders import DatasetError, read_jsonl


@dataclass
class Item:
    messages: list[dict[str, Any]]
    answer: str | list[str]
    category: str = "all"
    grader: str | None = None  # None: the run's grader


@dataclass
class Outcome:
    index: int
    model: str
    category: str
    correct: bool
    answer: str
    gold: str | list[str]
    experts: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    error: str | None = None


def load_dataset(path: str | Path, limit: int | None = None) -> list[Item]:
    items: list[Item] = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict) or "answer" not in row:
            raise DatasetError(f"{path}:{lineno}: needs an object with 'answer'")
        if "messages" in row:
            messages = row["messages"]
        elif "prompt" in row:
            messages = [{"role": "user", "content": str(row["prompt"])}]
        else:
            raise DatasetError(f"{path}:{lineno}: needs 'messages' or 'prompt'")
        answer = row["answer"]
        answer = [str(a) for a in answer] if isinstance(answer, list) else str(answer)
        grader = row.get("grader")
        if grader is not None and grader not in GRADERS:
            raise DatasetError(f"{path}:{lineno}: grader {grader!r} is not one of {', '.join(GRADERS)}")
        items.append(Item(messages, answer, str(row.get("category", "all")), grader))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise DatasetError(f"{path}: no items")
    return items


async def _ask(
    client,
    endpoint: str,
    model: str,
    index: int,
    item: Item,
    routing: dict | None,
    max_tokens: int,
    grader: str,
    semaphore: asyncio.Semaphore,
) -> Outcome:
    body: dict[str, Any] = {"model": model, "messages": item.messages, "max_tokens": max_tokens, "temperature": 0}
    if routing and model == "coe":
        body["routing"] = routing
    async with semaphore:
        started = time.perf_counter()
        try:
            response = await client.post(f"{endpoint.rstrip('/')}/chat/completions", json=body)
        except Exception as exc:  # network trouble is an error outcome, not a crash of the whole run
            return Outcome(
                index,
                model,
                item.category,
                False,
                "",
                item.answer,
                error=f"{type(exc).__name__}: {exc}",
                latency_s=time.perf_counter() - started,
            )
        latency = time.perf_counter() - started
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except Exception:
            message = response.text[:200]
        return Outcome(
            index,
            model,
            item.category,
            False,
            "",
            item.answer,
            latency_s=latency,
            error=f"HTTP {response.status_code}: {message}",
        )
    data = response.json()
    text = data["choices"][0]["message"]["content"] or ""
    usage = data.get("usage") or {}
    routing_info = data.get("routing") or {}
    experts = response.headers.get("x-coe-experts", "").split(",") if response.headers.get("x-coe-experts") else []
    correct = is_correct(text, item.answer, item.grader or grader)
    return Outcome(
        index,
        model,
        item.category,
        correct,
        text,
        item.answer,
        experts=experts,
        latency_s=latency,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        cost=float(routing_info.get("cost", 0.0)),
    )


async def run_model(
    endpoint: str,
    model: str,
    items: Sequence[Item],
    *,
    concurrency: int = 8,
    routing: dict | None = None,
    max_tokens: int = 32,
    grader: str = "auto",
    api_key: str | None = None,
    timeout_s: float = 300.0,
    progress: bool = True,
) -> list[Outcome]:
    import httpx
    from tqdm.auto import tqdm

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, headers=headers) as client:
        tasks = [
            asyncio.create_task(_ask(client, endpoint, model, i, item, routing, max_tokens, grader, semaphore))
            for i, item in enumerate(items)
        ]
        outcomes = []
        with tqdm(total=len(tasks), desc=f"online {model}", disable=not progress, leave=False) as bar:
            for task in asyncio.as_completed(tasks):
                outcomes.append(await task)
                bar.update(1)
    return sorted(outcomes, key=lambda o: o.index)


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    ok = [o for o in outcomes if o.error is None]
    by_category: dict[str, list[bool]] = defaultdict(list)
    by_expert: dict[str, list[bool]] = defaultdict(list)
    routed_to: dict[str, int] = defaultdict(int)
    for o in outcomes:
        by_category[o.category].append(o.correct)
        for expert in o.experts[:1]:
            by_expert[expert].append(o.correct)
            routed_to[expert] += 1
    latencies = np.array([o.latency_s for o in ok]) if ok else np.array([0.0])
    errors = [o for o in outcomes if o.error is not None]
    return {
        "n": n,
        "accuracy": sum(o.correct for o in outcomes) / n if n else 0.0,
        "per_category": {c: sum(v) / len(v) for c, v in sorted(by_category.items())},
        "per_expert": {e: {"accuracy": sum(v) / len(v), "n": len(v)} for e, v in sorted(by_expert.items())},
        "routed_to": dict(sorted(routed_to.items())),
        "cost": float(sum(o.cost for o in outcomes)),
        "prompt_tokens": int(sum(o.prompt_tokens for o in outcomes)),
        "completion_tokens": int(sum(o.completion_tokens for o in outcomes)),
        "latency_s": {
            "p50": float(np.percentile(latencies, 50)),
            "p95": float(np.percentile(latencies, 95)),
            "p99": float(np.percentile(latencies, 99)),
        },
        "errors": {"count": len(errors), "examples": [o.error for o in errors[:5]]},
    }


def oracle(runs: dict[str, list[Outcome]], experts: Sequence[str]) -> dict[str, Any] | None:
    """A prompt is solved when any single expert solved it; its cost is the cheapest solver's (else cheapest)."""
    present = [e for e in experts if e in runs]
    if len(present) < 2:
        return None
    n = len(runs[present[0]])
    solved, cost = 0, 0.0
    for i in range(n):
        answers = [runs[e][i] for e in present]
        winners = [o for o in answers if o.correct]
        solved += bool(winners)
        cost += min(o.cost for o in (winners or answers))
    return {"accuracy": solved / n, "cost": cost, "experts": present}


def report_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Online eval: {results['dataset']} ({results['n']} prompts) against {results['endpoint']}",
        "",
        "| run | accuracy | cost ($) | p50 s | p95 s | p99 s | errors | routed to |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results["runs"].items():
        routed = ", ".join(f"{e}: {n}" for e, n in s["routed_to"].items())
        lat = s["latency_s"]
        lines.append(
            f"| {name} | {s['accuracy']:.3f} | {s['cost']:.6f} | {lat['p50']:.3f} | {lat['p95']:.3f} | "
            f"{lat['p99']:.3f} | {s['errors']['count']} | {routed} |"
        )
    if results.get("oracle"):
        o = results["oracle"]
        lines.append(f"| oracle (best expert per prompt) | {o['accuracy']:.3f} | {o['cost']:.6f} | | | | | |")
    categories = sorted({c for s in results["runs"].values() for c in s["per_category"]})
    lines += [
        "",
        "Accuracy per category:",
        "",
        "| run | " + " | ".join(categories) + " |",
        "|---|" + "---|" * len(categories),
    ]
    for name, s in results["runs"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s['per_category'].get(c, 0):.3f}" for c in categories) + " |")
    return "\n".join(lines) + "\n"


def run_online(
    endpoint: str,
    dataset: str | Path,
    models: Sequence[str],
    out_dir: str | Path,
    *,
    concurrency: int = 8,
    routing: dict | None = None,
    max_tokens: int = 32,
    grader: str = "auto",
    limit: int | None = None,
    api_key: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    items = load_dataset(dataset, limit)
    runs: dict[str, list[Outcome]] = {}
    for model in models:
        runs[model] = asyncio.run(
            run_model(
                endpoint,
                model,
                items,
                concurrency=concurrency,
                routing=routing,
                max_tokens=max_tokens,
                grader=grader,
                api_key=api_key,
                progress=progress,
            )
        )
    experts = [m for m in models if m != "coe"]
    results = {
        "endpoint": endpoint,
        "dataset": str(dataset),
        "n": len(items),
        "routing": routing,
        "runs": {m: summarise(o) for m, o in runs.items()},
        "oracle": oracle(runs, experts),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(report_markdown(results))
    with (out / "outcomes.jsonl").open("w") as fh:
        for model_outcomes in runs.values():
            for o in model_outcomes:
                fh.write(json.dumps(asdict(o)) + "\n")
    return results
