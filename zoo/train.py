"""Training and evaluation of one zoo model (a small `LlamaForCausalLM`) on generated skill data.

Deterministic: `torch.manual_seed`, a seeded `random.Random` for the data, a fixed thread count. Sequences
are  <s> PROMPT <sep> ANSWER </s>, right-padded; the loss is on ANSWER and </s> only. Right padding
needs no attention mask under causal attention (real tokens never see the pads that follow them).

torch / transformers are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_service.routing.grading import is_correct
from zoo import tasks
from zoo.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    VOCAB_SIZE,
    decode,
    encode_answer,
    encode_prompt,
    save_tokenizer,
)

log = logging.getLogger(__name__)

# Bump when the training loop changes in a way that changes the weights (part of the recipe hash).
TRAIN_VERSION = 2
MAX_POSITIONS = 128  # = the max_model_len the zoo is served with
# Training threads per process. One, measured: on this 2-core machine two threads were 3-4x
# *slower* than one whenever anything else used the CPU (OpenMP threads waiting on each other), so
# `build` uses both cores by training two experts at once, one thread each. COE_ZOO_THREADS overrides.
NUM_THREADS = 1


def num_threads() -> int:
    return max(1, int(os.environ.get("COE_ZOO_THREADS", NUM_THREADS)))


@dataclass(frozen=True)
class ModelSize:
    layers: int
    hidden: int
    heads: int  # head_dim = hidden / heads: vLLM CPU attention needs >= 32 (16 is rejected)
    intermediate: int

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.hidden // self.heads < 32:
            raise ValueError(f"head_dim = {self.hidden}/{self.heads} must be an integer >= 32 (vLLM CPU)")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def param_count(self, vocab_size: int = VOCAB_SIZE) -> int:
        """Exact parameter count of the LlamaForCausalLM built from this size (tied embeddings)."""
        h, i = self.hidden, self.intermediate
        per_layer = 4 * h * h + 3 * h * i + 2 * h  # q,k,v,o + gate,up,down + 2 RMSNorms
        return vocab_size * h + self.layers * per_layer + h  # embeddings (tied head) + final norm


@dataclass(frozen=True)
class TrainRecipe:
    """How one specialist is trained: a first one-cycle phase of `steps`, then, while the quality gate
    is not met, further phases of `extension_steps` (a warm restart at half the previous peak rate),
    never past `max_steps` in all."""

    skills: tuple[str, ...]
    steps: int
    batch_size: int = 128
    max_lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    seed: int = 0
    extension_steps: int = 500
    max_steps: int = 4000

    def __post_init__(self) -> None:
        if not 0 < self.steps <= self.max_steps or self.extension_steps <= 0:
            raise ValueError("need 0 < steps <= max_steps and extension_steps > 0")

    def pick_skill(self, rng: random.Random) -> str:
        return rng.choice(self.skills)

    def phases(self) -> list[tuple[int, float]]:
        """(steps, peak learning rate) of every phase the recipe allows, in order."""
        out, done, lr = [(self.steps, self.max_lr)], self.steps, self.max_lr
        while done < self.max_steps:
            lr /= 2
            n = min(self.extension_steps, self.max_steps - done)
            out.append((n, lr))
            done += n
        return out


def llama_config(size: ModelSize) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(  # type: ignore[call-arg]  # rope_theta and torch_dtype go through **kwargs
        vocab_size=VOCAB_SIZE,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        head_dim=size.head_dim,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        torch_dtype="float32",
    )


def make_batch(examples: Sequence[tasks.Example]) -> tuple[Any, Any]:
    """Right-padded input ids and labels (-100 except on answer tokens and </s>)."""
    import torch

    rows, labels = [], []
    for ex in examples:
        p, a = encode_prompt(ex.prompt), encode_answer(ex.answer)
        rows.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(r) for r in rows)
    x = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    y = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        x[i, : len(r)] = torch.tensor(r)
        y[i, : len(lab)] = torch.tensor(lab)
    return x, y


def train_model(
    size: ModelSize,
    recipe: TrainRecipe,
    progress: Callable[[str], None] | None = None,
    good_enough: Callable[[Any], bool] | None = None,
) -> tuple[Any, int]:
    """Train a fresh model; returns it (eval mode) and the number of steps it took.

    Deterministic in (size, recipe, thread count). Phases follow `recipe.phases()`; after each one,
    `good_enough(model)` (eval mode) decides whether to stop. Without it only the first phase runs.
    """
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(num_threads())
    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(llama_config(size))
    rng = random.Random(f"zoo-train:{','.join(recipe.skills)}:{recipe.seed}")
    started = time.perf_counter()
    done = 0
    for steps, max_lr in recipe.phases():
        _train_phase(model, recipe, rng, steps, max_lr, done, progress, started)
        done += steps
        model.eval()
        if good_enough is None or good_enough(model):
            break
    return model, done


def _train_phase(
    model: Any,
    recipe: TrainRecipe,
    rng: random.Random,
    steps: int,
    max_lr: float,
    offset: int,
    progress: Callable[[str], None] | None,
    started: float,
) -> None:
    """One one-cycle phase with a fresh AdamW: a warm restart, so a phase can be appended to any other."""
    import torch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=max_lr, betas=(0.9, 0.98), weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=steps, pct_start=recipe.warmup_frac
    )
    running = None
    for step in range(1, steps + 1):
        # Mixed-length batches: grouping by length saves padding but made learning much slower.
        batch = [tasks.sample_example(recipe.pick_skill(rng), rng, "train") for _ in range(recipe.batch_size)]
        x, y = make_batch(batch)
        loss = model(input_ids=x, labels=y).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if not math.isfinite(running):
            raise RuntimeError(f"training diverged at step {offset + step}")
        if progress and (step % 250 == 0 or step == steps):
            progress(f"step {offset + step} loss {running:.4f} ({time.perf_counter() - started:.0f}s)")


def greedy_answers(model: Any, prompts: Sequence[str], max_new_tokens: int = 16, batch_size: int = 256) -> list[str]:
    """Greedy answers, batched by prompt length so no padding is needed (matches unpadded serving)."""
    import torch

    torch.set_num_threads(num_threads())
    encoded = [encode_prompt(p) for p in prompts]
    by_len: dict[int, list[int]] = {}
    for idx, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(idx)
    answers: list[str] = [""] * len(prompts)
    with torch.inference_mode():
        for idxs in by_len.values():
            for start in range(0, len(idxs), batch_size):
                chunk = idxs[start : start + batch_size]
                x = torch.tensor([encoded[i] for i in chunk], dtype=torch.long)
                out = model.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=EOS_ID,
                    pad_token_id=PAD_ID,
                )
                for row, i in zip(out[:, x.shape[1] :].tolist(), chunk):
                    answers[i] = decode(row)
    return answers


def accuracy_by_skill(model: Any, examples: Sequence[tasks.Example]) -> dict[str, float]:
    """Exact-match accuracy per skill (the core's `exact` grader)."""
    preds = greedy_answers(model, [ex.prompt for ex in examples])
    totals: dict[str, list[int]] = {}
    for ex, pred in zip(examples, preds):
        totals.setdefault(ex.skill, []).append(int(is_correct(pred, ex.answer, "exact")))
    return {skill: round(sum(v) / len(v), 4) for skill, v in totals.items()}


def save_model(model: Any, out_dir: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Weights (safetensors), config, generation_config (eos stops vLLM) and the tokenizer."""
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, max_new_tokens=16, do_sample=False
    )
    model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(out)
    if extra:
        (out / "zoo_card.json").write_text(json.dumps(extra, indent=2, sort_keys=True) + "\n")


def load_model(model_dir: str | Path) -> Any:
    import torch
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(num_threads())
    model = LlamaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    return model
