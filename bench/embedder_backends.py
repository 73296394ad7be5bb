"""Which backend should run the router's embedder? Speed, decision agreement and quality, side by side.

For torch (sentence-transformers) and each exported graph (`python -m zoo.embedder_export`: onnx,
onnx-int8, openvino, openvino-int8), in one run on the same prompts:
  * speed: ms for one prompt alone (median of 64), and ms per prompt in batches of 8 and 32, on short
    chat prompts (the zoo's held-out set, what the router mostly sees) and on the tables' long
    few-shot prompts (256 tokens after truncation);
  * agreement: routers fitted with torch's vectors on 80% of the training tables (a fixed shuffle),
    then asked to route the other 20% with each backend's vectors: the share of identical decisions;
  * quality: the mean score of the chosen models on that 20%, with each backend's vectors, and with
    routers fitted on each backend's own vectors (the offline eval's quantity);
and, when the default deployment's router artifacts exist, the share of identical decisions on the
zoo's held-out prompts. Prints JSON; gates nothing.

    python bench/embedder_backends.py [--tables ../shared/data/routing/model7/*.json --sample 2000] \
        [--strategies category,cost_aware,skill] [--threads 0]
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_machine import describe  # bench/ is on sys.path when a script runs

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")


def progress(message: str) -> None:
    print(f"[embedder_backends] {message}", file=sys.stderr, flush=True)


def speed(embedder, prompts: list[str]) -> dict[str, float]:
    embedder.encode(prompts[:8])  # load and warm up outside the timings
    singles = []
    for prompt in prompts[:64]:
        started = time.perf_counter()
        embedder.encode([prompt])
        singles.append(time.perf_counter() - started)
    out = {"one_prompt_ms": statistics.median(singles) * 1000}
    for size in (8, 32):
        batches = [prompts[i : i + size] for i in range(0, 256, size)]
        started = time.perf_counter()
        for batch in batches:
            embedder.encode(batch)
        out[f"batch{size}_ms_per_prompt"] = (time.perf_counter() - started) / (len(batches) * size) * 1000
    return {k: round(v, 3) for k, v in out.items()}


def split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * 0.8)
    return np.sort(order[:cut]), np.sort(order[cut:])


def main() -> None:
    from eval.embed_cache import CachedEmbedder
    from eval.offline import _fit, _make_strategy, _route, expert_cards
    from router_service.data.loaders import load_tables, read_jsonl
    from router_service.routing.embedding import make_embedder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=sorted(glob.glob("../shared/data/routing/routerbench/*.csv")))
    parser.add_argument("--sample", type=int, default=0, help="use N prompts of the tables (a fixed draw); 0: all")
    parser.add_argument("--strategies", default="category,cost_aware,skill")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--artifacts", default="models/routers", help="the default deployment's router artifacts")
    parser.add_argument("--heldout", default="eval/data/zoo_heldout.jsonl")
    args = parser.parse_args()
    backends = args.backends.split(",")
    strategies = args.strategies.split(",")

    table = load_tables(args.tables)
    if 0 < args.sample < len(table):
        table = table.subset(np.sort(np.random.default_rng(1).choice(len(table), args.sample, replace=False)))
    train_idx, test_idx = split(len(table))
    train, test = table.subset(train_idx), table.subset(test_idx)
    cards = expert_cards(table)
    index = {m: i for i, m in enumerate(table.models)}
    embedders = {b: make_embedder(backend=b) for b in backends}

    result: dict = {"machine": describe(), "tables": args.tables, "n_train": len(train), "n_test": len(test)}
    short = [row.get("prompt") or row["messages"][-1]["content"] for _, row in read_jsonl(args.heldout)]
    # Numbered, so no backend can be helped by a cache; timed one backend after the other.
    sets = {"short": short * 2, "long": test.prompts * 2}
    result["mean_chars"] = {name: round(float(np.mean([len(p) for p in ps])), 1) for name, ps in sets.items()}
    result["speed"] = {}
    for b, e in embedders.items():
        progress(f"speed: {b}")
        result["speed"][b] = {name: speed(e, [f"{p} ({i})" for i, p in enumerate(ps)]) for name, ps in sets.items()}
    vectors = {}
    for b, e in embedders.items():
        progress(f"embedding {len(table)} table prompts: {b} (cached on disk after the first run)")
        cached = CachedEmbedder(e, progress=False)
        vectors[b] = (cached.encode(train.prompts), cached.encode(test.prompts))
    scores = test.score_matrix()
    rows = np.arange(len(test))
    agreement: dict = {}
    quality: dict = {}
    for name in strategies:
        progress(f"agreement and quality: {name}")
        fitted_on_torch = _make_strategy(name, seed=0).set_embedder(embedders["torch"])
        _fit(fitted_on_torch, train, vectors["torch"][0])
        reference = _route(fitted_on_torch, test.prompts, vectors["torch"][1], cards, 0.0, index)
        agreement[name], quality[name] = {}, {}
        for b in backends:
            chosen = _route(fitted_on_torch, test.prompts, vectors[b][1], cards, 0.0, index)
            own = _make_strategy(name, seed=0).set_embedder(embedders[b])
            _fit(own, train, vectors[b][0])
            own_choice = _route(own, test.prompts, vectors[b][1], cards, 0.0, index)
            agreement[name][b] = round(float(np.mean(chosen == reference)), 4)
            quality[name][b] = {
                "torch_fitted": round(float(scores[rows, chosen].mean()), 4),
                "own_fit": round(float(scores[rows, own_choice].mean()), 4),
            }
    result["agreement_with_torch"] = agreement
    result["quality_on_test_split"] = quality
    result["zoo_heldout_agreement"] = zoo_agreement(args.artifacts, args.heldout, embedders)
    print(json.dumps(result, indent=2))


def zoo_agreement(artifacts: str, heldout: str, embedders: dict) -> dict | None:
    """Decisions of the default deployment's own routers on the zoo's held-out prompts, per backend."""
    from router_service.data.loaders import read_jsonl
    from router_service.domain import ExpertCard, Query
    from router_service.routing.artifact import load_artifact

    paths = sorted(Path(artifacts).glob("*.joblib"))
    if not paths or not Path(heldout).exists():
        return None
    prompts = [row.get("prompt") or row["messages"][-1]["content"] for _, row in read_jsonl(heldout)]
    vectors = {b: e.encode(prompts) for b, e in embedders.items()}
    out = {}
    for path in paths:
        strategy = load_artifact(str(path), embedder=embedders["torch"])
        cards = [ExpertCard(id=e) for e in strategy.fitted_experts or []]
        if not cards:
            continue
        decide = {
            b: [
                d.expert_ids[0]
                for d in strategy.route_batch([Query(text=p, embedding=v[i]) for i, p in enumerate(prompts)], cards)
            ]
            for b, v in vectors.items()
        }
        out[path.stem] = {
            b: round(float(np.mean(np.asarray(chosen) == np.asarray(decide["torch"]))), 4)
            for b, chosen in decide.items()
        }
    return {"n_prompts": len(prompts), "agreement_with_torch": out}


if __name__ == "__main__":
    main()
