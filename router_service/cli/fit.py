"""Fit a routing strategy on routing tables and save the artifact the router loads at start-up.

    python -m router_service.cli.fit --strategy cost_aware \\
        --train ../shared/data/routing/routerbench/*.csv --out routers/cost_aware.joblib
    python -m router_service.cli.fit --strategy category --train a.json b.json --prices prices.json \\
        --models m1,m2 --param confidence_threshold=0.4 --param 'category_map={"gsm8k": "m1"}' --out c.joblib

`--param key=value` values are read as JSON when they parse (numbers, lists, objects, true/false/null),
else as plain strings. Exit status: 0 saved, 2 bad arguments or input files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from router_service.data.scoring import SCORING_RULES
from router_service.routing.embedding import DEFAULT_EMBEDDER, EMBEDDER_BACKENDS, EMBEDDER_KEEP


def parse_param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--param expects key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    from router_service.routing.strategies.base import known_strategies

    parser = argparse.ArgumentParser(prog="python -m router_service.cli.fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", required=True, choices=known_strategies())
    parser.add_argument(
        "--train",
        required=True,
        nargs="+",
        metavar="FILE",
        help="routing tables (.csv RouterBench or .json question/scores)",
    )
    parser.add_argument("--prices", metavar="FILE", help="price table for tables without costs")
    parser.add_argument("--models", help="comma-separated subset of models to fit for")
    parser.add_argument(
        "--embedder-backend",
        default="torch",
        choices=EMBEDDER_BACKENDS,
        help="what runs the embedder (default torch; the others need `python -m zoo.embedder_export`)",
    )
    parser.add_argument(
        "--embedder",
        default=DEFAULT_EMBEDDER,
        help=f"embedder name (default {DEFAULT_EMBEDDER}; 'hashing-256' for a quick fake)",
    )
    parser.add_argument(
        "--embedder-keep",
        default="head",
        choices=EMBEDDER_KEEP,
        help="which end of a prompt longer than the embedder's window to embed (recorded in the artifact; "
        "'tail' keeps a few-shot prompt's question)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        type=parse_param,
        metavar="KEY=VALUE",
        help="strategy constructor parameter (repeatable)",
    )
    parser.add_argument(
        "--scoring",
        choices=SCORING_RULES,
        default="raw",
        help="what a score cell counts as (router_service.data.scoring): 'accuracy' is what papers report "
        "for model7 (a probability > 0 is correct); default raw",
    )
    parser.add_argument(
        "--categories",
        choices=("labels", "cluster"),
        default="labels",
        help="fit on the tables' task labels (default) or ignore them, so the category strategy clusters "
        "the prompts (k: --param n_clusters=K, else its silhouette rule)",
    )
    parser.add_argument("--out", required=True, metavar="ARTIFACT", help="artifact path (.joblib)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from router_service.data.loaders import TableFormatError, load_tables
    from router_service.data.scoring import apply_scoring
    from router_service.errors import CoEError, RoutingError
    from router_service.routing.artifact import save_artifact
    from router_service.routing.embedding import make_embedder
    from router_service.routing.strategies.base import get_strategy

    params = dict(args.param)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    try:
        table = apply_scoring(load_tables(args.train, prices=args.prices, models=models), args.scoring)
        if args.categories == "cluster":
            table = dataclasses.replace(table, categories=None)
    except TableFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        strategy = get_strategy(args.strategy, **params)
    except TypeError as exc:  # unknown/misspelt constructor parameter
        print(f"error: bad --param for strategy '{args.strategy}': {exc}", file=sys.stderr)
        return 2
    except (CoEError, RoutingError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if strategy.needs_embedding:
        strategy.set_embedder(make_embedder(args.embedder, backend=args.embedder_backend, keep=args.embedder_keep))

    started = time.perf_counter()
    try:
        strategy.fit(table)
    except ValueError as exc:  # e.g. bad estimator name, empty table
        print(f"error: cannot fit '{args.strategy}': {exc}", file=sys.stderr)
        return 2
    path = save_artifact(
        strategy,
        args.out,
        metadata={
            "train": [str(p) for p in args.train],
            "prices": args.prices,
            "rows": len(table),
            "scoring": args.scoring,
            "categories": args.categories,
        },
    )
    costs = "with costs" if table.has_costs else "without costs"
    print(
        f"fitted '{args.strategy}' on {len(table)} prompts × {len(table.models)} models ({costs}) "
        f"in {time.perf_counter() - started:.1f}s → {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
