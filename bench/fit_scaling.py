"""Fit and routing time as the routing table grows (1k → 20k → 100k prompts) and as experts grow (3 → 11 → 50).

Tables come from ../shared/data/routing: model7 for size (resampled with repeats past its 11.6k
prompts), routerbench's 11 models for experts, widened to 50 with synthetic experts (each a copy of a
real one with 10% of its scores flipped and its price scaled). Embeddings come from the on-disk cache
of `python -m eval offline` (cold: minutes; `--embedder-backend openvino` embeds long prompts fastest),
so the timings are of fitting and routing, not of embedding.

For `cost_aware` past its index threshold, the same fitted table is also routed with a full scan, and
the share of equal decisions is printed: the inverted-file index is approximate.

    python bench/fit_scaling.py [--strategies category,skill,cost_aware] [--sizes 1000,20000,100000]
        [--experts 3,11,50] [--embedder-backend openvino]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from bench_machine import describe  # bench/ is on sys.path when a script runs

SHARED = Path(os.environ.get("COE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "data" / "routing"


def resample(table, n: int, seed: int = 0):
    idx = np.random.default_rng(seed).choice(len(table), size=n, replace=n > len(table))
    return table.subset(idx), idx


def widen(table, n_experts: int, seed: int = 0):
    """The first n_experts models of `table`, padded with synthetic ones: a real model's column with
    10% of its scores flipped (1 − s) and its cost scaled by 0.5–2."""
    from router_service.data.table import RoutingTable

    if n_experts <= len(table.models):
        return table.select_models(table.models[:n_experts])
    rng = np.random.default_rng(seed)
    scores, costs, models = [table.scores], [table.cost_matrix()], list(table.models)
    for j in range(n_experts - len(table.models)):
        base = j % len(table.models)
        column = table.scores[:, base].copy()
        flip = rng.random(len(column)) < 0.1
        column[flip] = 1.0 - column[flip]
        scores.append(column[:, None])
        costs.append(table.cost_matrix()[:, base : base + 1] * rng.uniform(0.5, 2.0))
        models.append(f"synthetic-{j}")
    return RoutingTable(
        prompts=list(table.prompts),
        models=models,
        scores=np.hstack(scores),
        costs=np.hstack(costs),
        categories=table.categories,
    )


def route_all(strategy, cards, prompts, vectors) -> tuple[float, list]:
    from router_service.domain import Query

    queries = [Query(p, embedding=v) for p, v in zip(prompts, vectors)]
    started = time.perf_counter()
    chosen = [strategy.route(q, cards).expert_ids[0] for q in queries]
    return (time.perf_counter() - started) / len(queries) * 1000, chosen


def time_strategy(name: str, train, test_prompts, embedder, vectors_train, vectors_test) -> dict:
    from router_service.domain import ExpertCard
    from router_service.routing.strategies.base import get_strategy

    strategy = get_strategy(name).set_embedder(embedder)
    started = time.perf_counter()
    strategy.fit(train, embeddings=vectors_train)
    fit_s = time.perf_counter() - started
    cards = [ExpertCard(id=m) for m in train.models]
    route_ms, chosen = route_all(strategy, cards, test_prompts, vectors_test)
    row = {"fit_s": round(fit_s, 3), "route_ms_per_prompt": round(route_ms, 4)}
    index = getattr(strategy, "knn_index_", None)
    if index is not None:
        row["knn"] = index.kind
        if index.kind == "ivf":
            from router_service.routing.embedding import l2_normalise
            from router_service.routing.knn_index import KnnIndex

            full_scan = KnnIndex(l2_normalise(vectors_train), exact_max_rows=len(vectors_train))
            setattr(strategy, "knn_index_", full_scan)  # noqa: B010  (cost_aware's learned attribute)
            scan_ms, scanned = route_all(strategy, cards, test_prompts, vectors_test)
            setattr(strategy, "knn_index_", index)  # noqa: B010
            row["full_scan_route_ms_per_prompt"] = round(scan_ms, 4)
            row["decisions_equal_to_full_scan"] = round(float(np.mean(np.asarray(chosen) == np.asarray(scanned))), 4)
    return row


def knn_crossover(x: np.ndarray, sizes: list[int], queries: np.ndarray, k: int = 20) -> list[dict]:
    """ms per search of a full scan and of the inverted-file index, and the index's recall of the
    scan's k neighbours, at each table size: where the index starts to pay (`EXACT_MAX_ROWS`)."""
    from router_service.routing.embedding import l2_normalise
    from router_service.routing.knn_index import KnnIndex

    rows = []
    for size in sizes:
        idx = np.random.default_rng(0).choice(len(x), size=size, replace=size > len(x))
        train = l2_normalise(x[idx] + np.random.default_rng(1).normal(0, 1e-3, (size, x.shape[1])))  # no exact twins
        scan, ivf = KnnIndex(train, exact_max_rows=size), KnnIndex(train, exact_max_rows=0)
        timings, recall = {}, []
        for name, index in (("scan", scan), ("ivf", ivf)):
            started = time.perf_counter()
            found = [set(index.search(q, k)[0].tolist()) for q in queries]
            timings[name] = (time.perf_counter() - started) / len(queries) * 1000
            if name == "scan":
                truth = found
            else:
                recall = [len(a & b) / k for a, b in zip(found, truth)]
        rows.append(
            {
                "prompts": size,
                "scan_ms": round(timings["scan"], 4),
                "ivf_ms": round(timings["ivf"], 4),
                "ivf_recall_at_20": round(float(np.mean(recall)), 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    from eval.embed_cache import CachedEmbedder
    from router_service.data.loaders import load_tables
    from router_service.routing.embedding import make_embedder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default="category,skill,cost_aware")
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--embedder-backend", default="torch")
    parser.add_argument("--sizes", default="1000,20000,100000")
    parser.add_argument("--experts", default="3,11,50")
    parser.add_argument("--route-prompts", type=int, default=500)
    parser.add_argument("--crossover", default="", help="only the scan-vs-index table, at these sizes (2000,...)")
    args = parser.parse_args()
    names = args.strategies.split(",")
    embedder = CachedEmbedder(make_embedder(args.embedder, backend=args.embedder_backend), progress=False)

    model7 = load_tables(sorted((SHARED / "model7").glob("*.json")))
    bench = load_tables(sorted((SHARED / "routerbench").glob("*.csv")))
    model7_x = embedder.encode(model7.prompts)
    if args.crossover:
        queries = embedder.encode(resample(model7, 300, seed=1)[0].prompts)
        rows = knn_crossover(model7_x, [int(v) for v in args.crossover.split(",")], queries)
        print(f"\nmachine: {describe()}")
        print("| prompts | full scan ms | index ms | index recall@20 |\n|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['prompts']} | {r['scan_ms']} | {r['ivf_ms']} | {r['ivf_recall_at_20']} |")
        return
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        train, idx = resample(model7, size)
        test, test_idx = resample(model7, args.route_prompts, seed=1)
        vt, vq = model7_x[idx], model7_x[test_idx]
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
    for n_experts in [int(s) for s in args.experts.split(",")]:
        train = widen(bench, n_experts)
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
    print(f"\nmachine: {describe()}")
    print("| axis | prompts | experts | strategy | fit s | route ms/prompt | kNN | full scan ms | equal to scan |")
    print("|---|---:|---:|---|---:|---:|---|---:|---:|")
    for r in rows:
        print(
            f"| {r['axis']} | {r['prompts']} | {r['experts']} | {r['strategy']} | {r['fit_s']} | "
            f"{r['route_ms_per_prompt']} | {r.get('knn', '')} | {r.get('full_scan_route_ms_per_prompt', '')} | "
            f"{r.get('decisions_equal_to_full_scan', '')} |"
        )


if __name__ == "__main__":
    main()
