"""The quality record of a built expert: its graded answers on one fixed prompt set.

Every model build of the default composition (a trained specialist, the converted generalist) ends by
answering `quality_items()` — the validation split of each zoo skill plus the training split of the
general question bank — and writes `quality.json` next to its weights. The routers of the default
deployment are fitted on the table these records make (`zoo.routers`), so a router never assumes a
quality that was not measured on the very experts it serves, on this machine.

Grading is `router_service.routing.grading.is_correct(..., "contains")`, the same rule the online eval applies
to the zoo's test set. torch / transformers are imported only inside the measuring functions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_service.routing.grading import is_correct

QUALITY_FILE = "quality.json"
GRADER = "contains"
# Validation prompts per zoo skill in the quality table. 25 (not more) because the generalist answers
# every prompt with transformers at first start; the skills' templates are far apart in embedding space
# (a logistic regression on 25 per skill put every held-out prompt in its skill).
N_PER_SKILL = 25
QUALITY_VERSION = 1
GENERAL_CATEGORY = "general"


@dataclass(frozen=True)
class QualityItem:
    prompt: str
    answers: tuple[str, ...]
    category: str


def quality_items() -> list[QualityItem]:
    """The fixed prompt set every expert of the default composition is measured on (deterministic)."""
    from zoo import general, tasks

    items = [
        QualityItem(ex.prompt, (ex.answer,), ex.skill)
        for skill in tasks.SKILLS
        for ex in tasks.generate(skill, N_PER_SKILL, seed=0, split="validation")
    ]
    items += [
        QualityItem(prompt, tuple(answers), GENERAL_CATEGORY) for prompt, answers in general.general_examples("train")
    ]
    return items


def prompt_set_hash(items: Sequence[QualityItem] | None = None) -> str:
    blob = json.dumps([[i.prompt, list(i.answers), i.category] for i in (items or quality_items())])
    return hashlib.sha256(f"{QUALITY_VERSION}:{GRADER}:{blob}".encode()).hexdigest()[:16]


def grade(predictions: Sequence[str], items: Sequence[QualityItem]) -> list[int]:
    return [int(is_correct(p, list(item.answers), GRADER)) for p, item in zip(predictions, items, strict=True)]


def record(expert: str, predictions: Sequence[str], items: Sequence[QualityItem] | None = None) -> dict[str, Any]:
    """The quality record of `expert`: per-prompt scores, per-category means, and what they were measured on."""
    items = list(items or quality_items())
    scores = grade(predictions, items)
    per_category: dict[str, list[int]] = {}
    for item, score in zip(items, scores):
        per_category.setdefault(item.category, []).append(score)
    return {
        "expert": expert,
        "grader": GRADER,
        "prompt_set": prompt_set_hash(items),
        "per_category": {c: round(sum(v) / len(v), 4) for c, v in per_category.items()},
        "rows": [
            {"prompt": i.prompt, "category": i.category, "score": s, "reply": p[:200]}
            for i, s, p in zip(items, scores, predictions)
        ],
    }


def write_quality(model_dir: str | Path, expert: str, predictions: Sequence[str]) -> dict[str, Any]:
    rec = record(expert, predictions)
    (Path(model_dir) / QUALITY_FILE).write_text(json.dumps(rec, indent=1) + "\n")
    return rec


def read_quality(model_dir: str | Path) -> dict[str, Any] | None:
    """The record, or None when the directory has none or it was measured on another prompt set."""
    try:
        rec = json.loads((Path(model_dir) / QUALITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("prompt_set") == prompt_set_hash() else None


# ------------------------------------------------------------------------------------------ measuring
def measure_zoo_model(model: Any) -> list[str]:
    """Greedy replies of a trained specialist (character tokenizer, as served) to the quality prompts."""
    from zoo.train import greedy_answers

    return greedy_answers(model, [item.prompt for item in quality_items()])


def measure_chat_model(
    model_dir: str | Path,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Greedy replies of an HF chat model (chat template applied, as vLLM serves it) to the quality prompts.

    `max_new_tokens` is the online eval's reply budget, so a long-winded answer is graded as served.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zoo.train import num_threads

    torch.set_num_threads(max(1, num_threads()))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    prompts = [item.prompt for item in quality_items()]
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    # Similar lengths together, so a batch carries little padding.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    replies = [""] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(  # type: ignore[misc]  # transformers' generate stub rejects a concrete model
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            for i, row in zip(chunk, out[:, batch["input_ids"].shape[1] :]):
                replies[i] = str(tokenizer.decode(row, skip_special_tokens=True)).strip()
            if progress:
                progress(f"quality check {min(start + batch_size, len(order))}/{len(order)}")
    return replies


def ensure_chat_quality(model_dir: str | Path, name: str, progress: Callable[[str], None] | None = None) -> dict:
    """Measure an HF chat model's quality record once (single-flight), unless a current one is there."""
    from filelock import FileLock

    rec = read_quality(model_dir)
    if rec is not None:
        return rec
    with FileLock(str(Path(model_dir)) + ".quality.lock"):
        rec = read_quality(model_dir)
        if rec is None:
            rec = write_quality(model_dir, name, measure_chat_model(model_dir, progress=progress))
    return rec
