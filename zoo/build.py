"""The specialist zoo: specs, and the cached, locked, deterministic, quality-gated build of each model.

`ZOO_EXPERTS` maps a specialist's name to its `ExpertSpec`; `build_expert(name, out_dir)` makes the model
directory `out_dir` (HF format: config, generation_config, safetensors, tokenizer with chat template)
or reuses it when its marker file carries the current recipe hash. A build trains until its accuracy
on the validation split of its own skill reaches `spec.gate`, up to the recipe's step cap, and fails
with `QualityGateError` (naming the expert and its accuracy) when it does not: a broken specialist is
never written where the server looks. Importing this module is cheap (no torch until a build runs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import tasks
from zoo.cache import locked_build, read_marker
from zoo.tokenizer import tokenizer_fingerprint
from zoo.train import TRAIN_VERSION, ModelSize, TrainRecipe

log = logging.getLogger(__name__)

# Price of the zoo models: proportional to the parameter count ($ per million tokens per million params).
PRICE_PER_MTOK_PER_MPARAM = 1.0
EVAL_N_PER_SKILL = 50  # held-out examples per skill scored at build time (recorded in the marker)
GATE_N = 200  # validation prompts of its own skill a specialist's gate is measured on (fewer for capitals: 50)
DEFAULT_GATE = 0.95


class QualityGateError(RuntimeError):
    """A build whose own held-out check is below its gate: raised instead of serving a broken model."""

    def __init__(self, expert: str, accuracy: float, gate: float, steps: int) -> None:
        super().__init__(
            f"zoo expert '{expert}' failed its quality gate: validation accuracy {accuracy:.3f} "
            f"< {gate:.2f} after {steps} training steps (the recipe's cap); it is not served"
        )
        self.expert, self.accuracy, self.gate, self.steps = expert, accuracy, gate, steps


@dataclass(frozen=True)
class ExpertSpec:
    name: str
    description: str
    skills: tuple[str, ...]
    size: ModelSize
    steps: int
    # 32, not 64: math reached validation 1.000 after 1,000 steps at either size, and 32 halves the
    # training time that dominates the default deployment's first start (52 s against about 100 s).
    batch_size: int = 32
    max_lr: float = 3e-3
    extension_steps: int = 500
    max_steps: int = 4000
    gate: float = DEFAULT_GATE
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.skills if s not in tasks.SKILLS]
        if unknown:
            raise ValueError(f"expert '{self.name}': unknown skills {unknown}; known: {list(tasks.SKILLS)}")
        if not 0.0 <= self.gate <= 1.0:
            raise ValueError(f"expert '{self.name}': gate must be in [0, 1]")

    @property
    def params(self) -> int:
        return self.size.param_count()

    @property
    def cost_per_mtok(self) -> float:
        """$ per million tokens (input and output alike), proportional to the parameter count."""
        return round(PRICE_PER_MTOK_PER_MPARAM * self.params / 1e6, 4)

    @property
    def input_price(self) -> float:
        return self.cost_per_mtok

    @property
    def output_price(self) -> float:
        return self.cost_per_mtok

    def recipe(self) -> TrainRecipe:
        return TrainRecipe(
            skills=self.skills,
            steps=self.steps,
            batch_size=self.batch_size,
            max_lr=self.max_lr,
            seed=self.seed,
            extension_steps=self.extension_steps,
            max_steps=self.max_steps,
        )

    def recipe_dict(self) -> dict[str, Any]:
        """Everything the weights depend on; its hash is stored in the marker file."""
        return {
            "size": vars(self.size),
            "recipe": {**vars(self.recipe()), "skills": list(self.skills)},
            "gate": self.gate,
            "train_version": TRAIN_VERSION,
            "tasks": tasks.fingerprint(),
            "tokenizer": tokenizer_fingerprint(),
        }

    def recipe_hash(self) -> str:
        blob = json.dumps(self.recipe_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "skills": list(self.skills),
            "layers": self.size.layers,
            "hidden": self.size.hidden,
            "heads": self.size.heads,
            "intermediate": self.size.intermediate,
            "params": self.params,
            "steps": self.steps,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "gate": self.gate,
            "cost": {"input_per_mtok": self.input_price, "output_per_mtok": self.output_price},
        }


# Specialists: 2 layers x 128, 4 heads of 32 (vLLM CPU attention supports head_dim 32; 4 heads of
# 32 learned two-digit addition about twice as fast as 2 heads of 64 for the same compute).
_SPECIALIST = ModelSize(layers=2, hidden=128, heads=4, intermediate=256)

# First-phase lengths: the shortest that cleared the gate in one trial here (math: validation 1.000 after
# 1,000 steps); another machine's float rounding may land on the other side of the edge, so the gate
# loop adds 500-step phases at half the previous peak rate until the gate holds (cap 4,000 steps).
ZOO_EXPERTS: dict[str, ExpertSpec] = {
    spec.name: spec
    for spec in (
        ExpertSpec(
            name="math",
            description="Arithmetic specialist: adds two two-digit numbers ('What is 37+45?' -> 82).",
            skills=("arithmetic",),
            size=_SPECIALIST,
            steps=1000,
        ),
        ExpertSpec(
            name="strings",
            description="String specialist: reverses a word ('Reverse the word planet' -> tenalp).",
            skills=("strings",),
            size=_SPECIALIST,
            steps=1000,
        ),
        ExpertSpec(
            name="units",
            description="Unit-conversion specialist: metric length, mass, volume ('Convert 3 km to m' -> 3000).",
            skills=("units",),
            size=_SPECIALIST,
            steps=600,
        ),
        ExpertSpec(
            name="atlas",
            description="Geography specialist for the project's invented world atlas ('Capital of Zulia?' -> Foul).",
            skills=("capitals",),
            size=_SPECIALIST,
            steps=700,
        ),
    )
}


def get_spec(name: str) -> ExpertSpec:
    try:
        return ZOO_EXPERTS[name]
    except KeyError:
        raise ValueError(f"unknown zoo expert '{name}'; known: {', '.join(ZOO_EXPERTS)}") from None


def is_current(spec: ExpertSpec, model_dir: str | Path) -> bool:
    """True when `model_dir` holds a finished build of exactly this recipe."""
    marker = read_marker(model_dir)
    return marker is not None and marker.get("recipe_hash") == spec.recipe_hash() and marker.get("name") == spec.name


def gate_examples(spec: ExpertSpec) -> list[tasks.Example]:
    """The validation prompts of the expert's own skills its gate is measured on."""
    return [ex for skill in spec.skills for ex in tasks.generate(skill, GATE_N, seed=0, split="validation")]


def _default_trainer(spec: ExpertSpec, tmp_dir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Train until the gate holds (or the cap), check, save into `tmp_dir`; returns facts for the marker."""
    from zoo.quality import measure_zoo_model, write_quality
    from zoo.train import accuracy_by_skill, save_model, train_model

    gate_set = gate_examples(spec)
    checks: list[dict[str, Any]] = []

    def good_enough(model: Any) -> bool:
        accuracy = accuracy_by_skill(model, gate_set)
        mean = sum(accuracy.values()) / len(accuracy)
        checks.append({"validation_accuracy": round(mean, 4)})
        progress(f"validation accuracy {mean:.3f} (gate {spec.gate})")
        return mean >= spec.gate

    started = time.perf_counter()
    model, steps = train_model(spec.size, spec.recipe(), progress=progress, good_enough=good_enough)
    train_s = time.perf_counter() - started
    accuracy = checks[-1]["validation_accuracy"]
    if accuracy < spec.gate:
        raise QualityGateError(spec.name, accuracy, spec.gate, steps)
    heldout = accuracy_by_skill(model, tasks.heldout_set(EVAL_N_PER_SKILL))
    save_model(model, tmp_dir, extra=spec.to_dict())
    write_quality(tmp_dir, spec.name, measure_zoo_model(model))
    return {
        "train_seconds": round(train_s, 1),
        "train_steps": steps,
        "validation_accuracy": accuracy,
        "gate": spec.gate,
        "gate_checks": checks,
        "heldout_accuracy": heldout,
    }


def build_expert(
    name: str,
    out_dir: str | Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    spec: ExpertSpec | None = None,
    trainer: Callable[[ExpertSpec, Path, Callable[[str], None]], dict[str, Any]] | None = None,
) -> Path:
    """Build the zoo expert `name` into the model directory `out_dir`, or reuse a current build.

    Idempotent and safe under concurrency (`zoo.cache.locked_build`). `spec` overrides the registered
    spec (tests).
    """
    spec = spec or get_spec(name)
    out = Path(out_dir).expanduser().resolve()
    say = progress or (lambda msg: log.info("zoo %s: %s", spec.name, msg))

    def train(tmp: Path) -> dict[str, Any]:
        started = time.perf_counter()
        say(f"building ({spec.params:,} params, {spec.steps} steps, recipe {spec.recipe_hash()})")
        facts = (trainer or _default_trainer)(spec, tmp, say)
        marker = {
            "name": spec.name,
            "recipe_hash": spec.recipe_hash(),
            "recipe": spec.recipe_dict(),
            "spec": spec.to_dict(),
            "build_seconds": round(time.perf_counter() - started, 1),
            "train_threads": _threads(),
            **facts,
        }
        say(f"built in {marker['build_seconds']}s, held-out accuracy {facts.get('heldout_accuracy')}")
        return marker

    locked_build(out, lambda path: is_current(spec, path), train, force=force)
    return out


def _threads() -> int:
    from zoo.train import num_threads

    return num_threads()


def build_all(
    out_root: str | Path,
    only: list[str] | None = None,
    *,
    jobs: int = 2,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Build every zoo expert into `out_root/<name>`, `jobs` at a time (one training thread each).

    Returns, per expert, the model dir, whether it was cached, and its own build time. Experts are
    started longest first.
    """
    names = only or list(ZOO_EXPERTS)
    for name in names:
        get_spec(name)
    root = Path(out_root)
    order = sorted(names, key=lambda n: -ZOO_EXPERTS[n].params * ZOO_EXPERTS[n].steps)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for name in order:
        if not force and is_current(ZOO_EXPERTS[name], root / name):
            marker = read_marker(root / name) or {}
            results[name] = {
                "dir": str(root / name),
                "cached": True,
                "seconds": 0.0,
                **{
                    k: marker.get(k)
                    for k in ("train_seconds", "train_steps", "validation_accuracy", "heldout_accuracy")
                },
            }
        else:
            todo.append(name)
    if jobs <= 1 or len(todo) <= 1:
        for name in todo:
            results[name] = _build_one(name, str(root / name), force)
            progress(f"[zoo] {name}: {results[name]['seconds']:.1f}s")
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_build_one, name, str(root / name), force): name for name in todo}
            for future in as_completed(futures):
                name = futures[future]
                results[name] = future.result()
                progress(f"[zoo] {name}: {results[name]['seconds']:.1f}s")
    return {name: results[name] for name in names}


def _build_one(name: str, out_dir: str, force: bool) -> dict[str, Any]:
    started = time.perf_counter()
    path = build_expert(name, out_dir, force=force, progress=lambda msg: print(f"[zoo] {name}: {msg}", flush=True))
    marker = read_marker(path) or {}
    return {
        "dir": str(path),
        "cached": False,
        "seconds": round(time.perf_counter() - started, 1),
        "train_seconds": marker.get("train_seconds"),
        "train_steps": marker.get("train_steps"),
        "validation_accuracy": marker.get("validation_accuracy"),
        "heldout_accuracy": marker.get("heldout_accuracy"),
    }
