"""The expert zoo: specs, and the cached, locked, deterministic build of each model directory.

`ZOO_EXPERTS` maps an expert name to its `ExpertSpec`; `build_expert(name, out_dir)` makes the model
directory `out_dir` (HF format: config, generation_config, safetensors, tokenizer with chat template)
or reuses it when its marker file carries the current recipe hash. Importing this module is cheap
(no torch / transformers until a build actually runs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from router_service.zoo import tasks
from router_service.zoo.tokenizer import tokenizer_fingerprint
from router_service.zoo.train import TRAIN_VERSION, ModelSize, TrainRecipe

log = logging.getLogger(__name__)

MARKER = "zoo-build.json"
# Price of the zoo models: proportional to the parameter count ($ per million tokens per million params).
PRICE_PER_MTOK_PER_MPARAM = 1.0
EVAL_N_PER_SKILL = 50  # held-out examples per skill scored at build time (recorded in the marker)


@dataclass(frozen=True)
class ExpertSpec:
    name: str
    description: str
    skills: tuple[str, ...]
    size: ModelSize
    steps: int
    batch_size: int = 64
    max_lr: float = 3e-3
    generalist: bool = False
    skill_weights: tuple[float, ...] | None = None
    curriculum: str = "full"
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.skills if s not in tasks.SKILLS]
        if unknown:
            raise ValueError(f"expert '{self.name}': unknown skills {unknown}; known: {list(tasks.SKILLS)}")
        if self.skill_weights is not None and len(self.skill_weights) != len(self.skills):
            raise ValueError(f"expert '{self.name}': one skill weight per skill")
        if self.curriculum not in tasks.CURRICULA:
            raise ValueError(f"expert '{self.name}': curriculum must be one of {tasks.CURRICULA}")

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
            skill_weights=self.skill_weights,
            curriculum=self.curriculum,
        )

    def recipe_dict(self) -> dict[str, Any]:
        """Everything the weights depend on; its hash is stored in the marker file."""
        return {
            "size": vars(self.size),
            "recipe": {
                **vars(self.recipe()),
                "skills": list(self.skills),
                "skill_weights": list(self.skill_weights) if self.skill_weights else None,
            },
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
            "generalist": self.generalist,
            "layers": self.size.layers,
            "hidden": self.size.hidden,
            "heads": self.size.heads,
            "intermediate": self.size.intermediate,
            "params": self.params,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "curriculum": self.curriculum,
            "cost": {"input_per_mtok": self.input_price, "output_per_mtok": self.output_price},
        }


# Specialists: 2 layers x 128, 4 heads of 32 (vLLM CPU attention supports head_dim 32; 4 heads of
# 32 learned two-digit addition about twice as fast as 2 heads of 64 for the same compute).
_SPECIALIST = ModelSize(layers=2, hidden=128, heads=4, intermediate=256)

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
            steps=700,
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
        ExpertSpec(
            name="general",
            description="Generalist: all four skills, larger and more expensive, trained on a broad but "
            "shallow curriculum (part of each skill), so it is decent everywhere and worse than each "
            "specialist on the specialist's own skill.",
            skills=tuple(tasks.SKILLS),
            size=ModelSize(layers=3, hidden=192, heads=6, intermediate=384),
            steps=800,
            max_lr=2e-3,
            skill_weights=(0.35, 0.3, 0.1, 0.25),
            curriculum="broad",
            generalist=True,
        ),
    )
}


def get_spec(name: str) -> ExpertSpec:
    try:
        return ZOO_EXPERTS[name]
    except KeyError:
        raise ValueError(f"unknown zoo expert '{name}'; known: {', '.join(ZOO_EXPERTS)}") from None


def read_marker(model_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(model_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_current(spec: ExpertSpec, model_dir: str | Path) -> bool:
    """True when `model_dir` holds a finished build of exactly this recipe."""
    marker = read_marker(model_dir)
    return bool(marker) and marker.get("recipe_hash") == spec.recipe_hash() and marker.get("name") == spec.name


def _default_trainer(spec: ExpertSpec, tmp_dir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Train, evaluate on the held-out set, save into `tmp_dir`; returns facts for the marker."""
    from router_service.zoo.train import accuracy_by_skill, save_model, train_model

    started = time.perf_counter()
    model = train_model(spec.size, spec.recipe(), progress=progress)
    train_s = time.perf_counter() - started
    heldout = tasks.heldout_set(EVAL_N_PER_SKILL)
    accuracy = accuracy_by_skill(model, heldout)
    save_model(model, tmp_dir, extra=spec.to_dict())
    return {"train_seconds": round(train_s, 1), "heldout_accuracy": accuracy}


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

    Idempotent and safe under concurrency: a file lock `<out_dir>.lock` serialises builders, the
    model is written to a temporary sibling directory and moved into place with its marker last,
    so a reader never sees a half-written model. `spec` overrides the registered spec (tests).
    """
    spec = spec or get_spec(name)
    out = Path(out_dir).expanduser().resolve()
    if not force and is_current(spec, out):
        return out
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda msg: log.info("zoo %s: %s", spec.name, msg))
    with FileLock(str(out) + ".lock"):
        if not force and is_current(spec, out):  # another process built it while we waited
            return out
        tmp = out.parent / f".{out.name}.building-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
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
            (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
            say(f"built in {marker['build_seconds']}s, held-out accuracy {facts.get('heldout_accuracy')}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _threads() -> int:
    from router_service.zoo.train import num_threads

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
    started longest first, so the generalist overlaps the specialists.
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
            results[name] = {"dir": str(root / name), "cached": True, "seconds": 0.0,
                             "train_seconds": marker.get("train_seconds"),
                             "heldout_accuracy": marker.get("heldout_accuracy")}
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
        "heldout_accuracy": marker.get("heldout_accuracy"),
    }
