"""Routers fitted on what was built: the default deployment's artifacts, from its experts' quality records.

`fit_routers(experts, out_dir, ...)` reads the `quality.json` of every built expert (`zoo.quality`),
writes the quality table they make (`quality-table.json`, the question/scores JSON format that
`python -m router_service.cli.fit` and `python -m eval offline` read) with its price file, and fits one
artifact per strategy on it. Each artifact records the table's hash; `check_routers` refuses an
artifact fitted on any other table, and `fit_routers` refits exactly then. Cached and single-flight
(a file lock), like the model builds: the first start fits, later starts reuse.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from router_service.errors import ConfigError

TABLE_FILE = "quality-table.json"
PRICES_FILE = "prices.json"
DEFAULT_STRATEGIES = ("category", "skill", "cost_aware")


def quality_rows(experts: Mapping[str, str | Path]) -> list[dict[str, Any]]:
    """One row per quality prompt with every expert's score; fails naming an expert without a record."""
    from zoo.quality import read_quality

    records = {}
    for expert, model_dir in experts.items():
        rec = read_quality(model_dir)
        if rec is None:
            raise ConfigError(
                f"expert '{expert}': no current quality record in {model_dir} (build it first); "
                "a router is fitted only on quality measured on the experts it serves"
            )
        records[expert] = rec
    first = next(iter(records.values()))["rows"]
    return [
        {
            "question": row["prompt"],
            "category": row["category"],
            "scores": {e: rec["rows"][i]["score"] for e, rec in records.items()},
        }
        for i, row in enumerate(first)
    ]


def table_hash(rows: Sequence[Mapping[str, Any]], prices: Mapping[str, Any]) -> str:
    blob = json.dumps({"rows": list(rows), "prices": prices}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def artifact_path(out_dir: str | Path, strategy: str) -> Path:
    return Path(out_dir) / f"{strategy}.joblib"


def _fitted_on(path: Path) -> str | None:
    from router_service.routing.artifact import read_artifact_info

    try:
        return read_artifact_info(path).get("metadata", {}).get("table_sha256")
    except (OSError, ValueError, ConfigError):
        return None


def check_routers(
    out_dir: str | Path,
    experts: Mapping[str, str | Path],
    prices: Mapping[str, Any],
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
) -> str:
    """The measured table's hash, when every artifact was fitted on it; else a ConfigError naming the file."""
    want = table_hash(quality_rows(experts), prices)
    for strategy in strategies:
        path = artifact_path(out_dir, strategy)
        got = _fitted_on(path)
        if got != want:
            raise ConfigError(
                f"router artifact {path} was fitted on table {got or 'unknown'}, but the experts it "
                f"serves measure as table {want}; refit it (python -m zoo.routers)"
            )
    return want


def fit_routers(
    experts: Mapping[str, str | Path],
    out_dir: str | Path,
    prices: Mapping[str, Any],
    *,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    embedder: Any = None,
    force: bool = False,
    progress=print,
) -> dict[str, Path]:
    """Fit (or reuse) one artifact per strategy on the experts' measured quality table."""
    from filelock import FileLock

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not force:
            try:
                check_routers(out, experts, prices, strategies)
                return {s: artifact_path(out, s) for s in strategies}
            except ConfigError:
                pass
        return _fit(experts, out, prices, strategies, params or {}, embedder, progress)


def _fit(experts, out: Path, prices, strategies, params, embedder, progress) -> dict[str, Path]:
    from router_service.data.loaders import load_table
    from router_service.routing.artifact import save_artifact
    from router_service.routing.embedding import DEFAULT_EMBEDDER, make_embedder
    from router_service.routing.strategies.base import get_strategy

    rows = quality_rows(experts)
    digest = table_hash(rows, prices)
    (out / TABLE_FILE).write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    (out / PRICES_FILE).write_text(json.dumps(prices, indent=2, sort_keys=True) + "\n")
    table = load_table(out / TABLE_FILE, prices=out / PRICES_FILE)
    embedder = embedder or make_embedder(DEFAULT_EMBEDDER)
    params = {name: dict(p) for name, p in params.items()}
    if "category" in strategies and "C" not in params.get("category", {}):
        params.setdefault("category", {})["C"] = choose_category_c(table, embedder)
        progress(f"[routers] category: C={params['category']['C']} chosen by 5-fold CV on the quality table")
    paths = {}
    for name in strategies:
        started = time.perf_counter()
        strategy = get_strategy(name, **params.get(name, {}))
        if strategy.needs_embedding:
            strategy.set_embedder(embedder)
        strategy.fit(table)
        paths[name] = save_artifact(
            strategy,
            artifact_path(out, name),
            metadata={
                "table_sha256": digest,
                "table": str(out / TABLE_FILE),
                "rows": len(table),
                "experts": list(experts),
            },
        )
        progress(
            f"[routers] fitted {name} on {len(table)} measured prompts x {len(experts)} experts "
            f"in {time.perf_counter() - started:.1f}s"
        )
    return paths


CATEGORY_CS = (0.1, 1.0, 10.0, 100.0)


def choose_category_c(table: Any, embedder: Any) -> float:
    """The category classifier's inverse regularisation, by 5-fold cross-validated log-loss on the table.

    Log-loss, not accuracy: the router trusts the classifier's *confidence* (below the threshold a prompt
    goes to the generalist), so its probabilities must be calibrated, not only its argmax right. The table
    is the router's training data (validation-split prompts of the skills, training-split general
    questions); the online eval's test split is never read."""
    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV

    from router_service.routing.strategies.baselines import one_thread

    x = np.asarray(embedder.encode(list(table.prompts)))
    with one_thread():
        cv = LogisticRegressionCV(Cs=list(CATEGORY_CS), cv=5, scoring="neg_log_loss", max_iter=2000)
        cv.fit(x, np.asarray(table.categories))
    return float(cv.C_[0])


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m zoo.routers --experts math=models/zoo/math ... --prices P.json --out models/routers`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zoo.routers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experts", nargs="+", required=True, metavar="ID=MODEL_DIR")
    parser.add_argument("--prices", required=True, help="price table JSON {id: {input_price, output_price}}")
    parser.add_argument("--out", required=True)
    parser.add_argument("--default-expert", help="the generalist (category strategy's low-confidence target)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    experts = dict(item.split("=", 1) for item in args.experts)
    prices = json.loads(Path(args.prices).read_text())
    params = {"category": {"default_expert": args.default_expert}} if args.default_expert else {}
    fit_routers(experts, args.out, prices, params=params, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
