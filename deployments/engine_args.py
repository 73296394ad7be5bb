"""Unknown vLLM engine arguments in a config fail at start-up, naming the field, not deep inside a replica.

The names are those of vLLM's `AsyncEngineArgs` dataclass. They are read from vLLM's own source
(`vllm/engine/arg_utils.py`) rather than by importing vLLM: the import (torch, transformers and vLLM)
took longer than all the rest of an expert application's build, and every build paid it on every start,
all at once, on the same cores as the engines starting next to them. Where the source does not have the
expected shape (another vLLM layout), the names come from the import, as before.
`tests/unit/test_engine_args.py` checks that both agree.

`CPU_ENGINE_ENV` is the environment a CPU expert's replica starts its engine in.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

from router_service.errors import ConfigError

_ARGS_MODULE = ("engine", "arg_utils.py")

# What a CPU expert's replica needs from vLLM, unless the expert's `env` says otherwise:
# - VLLM_CPU_KVCACHE_SPACE: GiB of KV cache; without it each engine reserves a large share of RAM.
# - VLLM_ENABLE_V1_MULTIPROCESSING=0: on CPU, vLLM otherwise runs the model in a third process
#   (engine core + one "multiproc executor" worker), each importing torch and vLLM again. At 0 the
#   worker runs inside the engine-core process; AsyncLLM still keeps the engine core in its own
#   process. Measured with `python bench/engine_start.py models/smollm2-135m-instruct 1024` (README
#   "One process fewer per CPU engine"): SmolLM2's engine start went from about 35 s to 20 s, and
#   generation was no slower.
CPU_ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def engine_arg_names() -> set[str]:
    """The fields of `vllm.engine.arg_utils.AsyncEngineArgs`. ImportError when vLLM is not installed."""
    spec = importlib.util.find_spec("vllm")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("vllm is not installed")
    names = engine_arg_names_from_source(Path(spec.submodule_search_locations[0]).joinpath(*_ARGS_MODULE))
    if names is not None:
        return names
    from vllm.engine.arg_utils import AsyncEngineArgs

    return {f.name for f in dataclasses.fields(AsyncEngineArgs)}


def engine_arg_names_from_source(arg_utils: Path) -> set[str] | None:
    """Annotated class attributes of `EngineArgs` and its subclass `AsyncEngineArgs`, as `dataclasses.fields`
    lists them (no ClassVar); None unless both classes are found as plain dataclasses in that file."""
    try:
        tree = ast.parse(arg_utils.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    base, derived = classes.get("EngineArgs"), classes.get("AsyncEngineArgs")
    if base is None or derived is None or not _is_dataclass(base) or not _is_dataclass(derived):
        return None
    if [ast.unparse(b) for b in derived.bases] != ["EngineArgs"] or base.bases:
        return None
    return _fields(base) | _fields(derived)


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any(ast.unparse(d).split("(")[0] in ("dataclass", "dataclasses.dataclass") for d in node.decorator_list)


def _fields(node: ast.ClassDef) -> set[str]:
    return {
        stmt.target.id
        for stmt in node.body
        if isinstance(stmt, ast.AnnAssign)
        and isinstance(stmt.target, ast.Name)
        and not ast.unparse(stmt.annotation).replace("typing.", "").startswith(("ClassVar", "InitVar"))
    }


def validate_engine_args(prefix: str, engine: dict[str, Any]) -> None:
    """Refuse a key of `engine` that vLLM does not take.

    `prefix` locates the expert in its config: "experts[2]." in one application, "" in its own."""
    try:
        names = engine_arg_names()
    except ImportError:  # vLLM not installed in this process: the replica will report it instead
        return
    for key in engine:
        if key == "model":
            raise ConfigError(f"{prefix}engine.model: set the model with {prefix}model")
        if key not in names:
            raise ConfigError(f"{prefix}engine.{key}: not a vLLM engine argument")
