"""Fit time and routing time as the routing table grows (1k, 5k, 20k prompts) and as experts grow (3, 7, 11).

Tables are drawn from ../shared/data/routing (model7 for size, routerbench's 11 models for experts);
the 20k table repeats prompts. Embeddings come from the on-disk cache of `python -m eval offline`
(cold: minutes), so the timings are of fitting and routing, not of embedding.

    python bench/fit_scaling.py [--strategies category,skill,cost_aware] [--embedder all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("COE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "data" / "routing"


def resample(table, n: int, seed: int = 0):
    idx = np.random.default_rng(seed).choice(len(table), size=n, replace=n > len(table))
    return table.subset(idx)


def time_strategy(name: str, train, test_prompts, embedder, vectors_train, vectors_test) -> dict:
    from router_service.domain import ExpertCard, Query
    from router_service.routing.strategies.base import get_strategy

    strategy = get_strategy(name).set_embedder(embedder)
    started = time.perf_counter()
    strategy.fit(train, embeddings=vectors_train)
    fit_s = time.perf_counter() - started
    cards = [ExpertCard(id=m) for m in train.models]
    queries = [Query(p, embedding=v) for p, v in zip(test_prompts, vectors_test)]
    started = time.perf_counter()
    for q in queries:
        strategy.route(q, cards)
    route_ms = (time.perf_counter() - started) / len(queries) * 1000
    return {"fit_s": round(fit_s, 3), "route_ms_per_prompt": round(route_ms, 4)}


def main() -> None:
    from eval.embed_cache import CachedEmbedder
    from router_service.data.loaders import load_tables
    from router_service.routing.embedding import make_embedder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default="category,skill,cost_aware")
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--route-prompts", type=int, default=500)
    args = parser.parse_args()
    names = args.strategies.split(",")
    embedder = CachedEmbedder(make_embedder(args.embedder), progress=False)

    model7 = load_tables(sorted((SHARED / "model7").glob("*.json")))
    bench = load_tables(sorted((SHARED / "routerbench").glob("*.csv")))
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        train = resample(model7, size)
        test = resample(model7, args.route_prompts, seed=1)
        vt, vq = embedder.encode(train.prompts), embedder.encode(test.prompts)
        for name in names:
            rows.append(
                {
                    "axis": "prompts",
                    "prompts": size,
                    "experts": len(train.models),
                    "strategy": name,
                    **time_strategy(name, train, test.prompts, embedder, vt, vq),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    vt_all = embedder.encode(bench.prompts)
    for n_experts in (3, 7, 11):
        train = bench.select_models(bench.models[:n_experts])
        test_idx = np.random.default_rng(2).choice(len(bench), size=args.route_prompts)
        for name in names:
            rows.append(
                {
                    "axis": "experts",
                    "prompts": len(train),
                    "experts": n_experts,
                    "strategy": name,
                    **time_strategy(
                        name, train, [bench.prompts[i] for i in test_idx], embedder, vt_all, vt_all[test_idx]
                    ),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print("\n| axis | prompts | experts | strategy | fit s | route ms/prompt |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['axis']} | {r['prompts']} | {r['experts']} | {r['strategy']} | {r['fit_s']} | "
            f"{r['route_ms_per_prompt']} |"
        )


if __name__ == "__main__":
    main()
