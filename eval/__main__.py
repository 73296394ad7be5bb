"""`python -m eval offline --train FILE [FILE ...] (--test FILE [FILE ...] | --cv K) [options]`
`python -m eval online --endpoint URL --dataset FILE [--models coe,math,...] [--concurrency N] [--routing JSON]
--out DIR`.

Writes results.json, report.md and pareto.png to --out and prints the report table. A bad input
(unreadable table, unknown strategy or model, inconsistent options) prints `error: ...` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from eval.offline import OfflineConfigError
from router_service.data.loaders import DatasetError, TableFormatError, load_prices, load_tables
from router_service.data.scoring import SCORING_RULES
from router_service.errors import CoEError, RoutingError
from router_service.routing.embedding import DEFAULT_EMBEDDER, EMBEDDER_BACKENDS, EMBEDDER_KEEP
from router_service.routing.grading import GRADERS


def _csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    offline = commands.add_parser("offline", help="fit strategies on routing tables and score held-out prompts")
    offline.add_argument(
        "--train",
        nargs="+",
        required=True,
        metavar="FILE",
        help="routing tables to fit on (RouterBench .csv or question/scores .json)",
    )
    offline.add_argument("--test", nargs="+", metavar="FILE", help="routing tables to evaluate on")
    offline.add_argument("--prices", metavar="FILE", help="price JSON {model: {input_price, output_price}} $/Mtok")
    offline.add_argument(
        "--strategies",
        type=_csv_list,
        metavar="NAME[,NAME...]",
        help="strategies to evaluate (default: every registered non-baseline strategy)",
    )
    offline.add_argument(
        "--models", type=_csv_list, metavar="M1,M2,...", help="subset of models (must be present in every file)"
    )
    offline.add_argument("--out", default="out/offline", metavar="DIR", help="output directory (default out/offline)")
    offline.add_argument("--cv", type=int, metavar="K", help="K-fold cross-validation on --train (no --test)")
    offline.add_argument(
        "--embedder-backend",
        default="torch",
        choices=EMBEDDER_BACKENDS,
        help="what runs the embedder (default torch; the others need `python -m zoo.embedder_export`)",
    )
    offline.add_argument(
        "--embedder",
        default=DEFAULT_EMBEDDER,
        metavar="NAME",
        help=f"prompt embedder (default {DEFAULT_EMBEDDER}; 'hashing-256' for a fast one)",
    )
    offline.add_argument(
        "--embedder-keep",
        default="head",
        choices=EMBEDDER_KEEP,
        help="which end of a prompt longer than the embedder's window to embed (default head, as "
        "sentence-transformers does; 'tail' keeps a few-shot prompt's question)",
    )
    offline.add_argument("--seed", type=int, default=0, metavar="N", help="seed for CV shuffle and random baseline")
    offline.add_argument(
        "--grid",
        type=int,
        default=11,
        metavar="N",
        help="number of λ points in [0, 1] for trade-off strategies (default 11)",
    )
    offline.add_argument(
        "--grid-spacing",
        choices=("linear", "geometric"),
        default="linear",
        help="λ points evenly spaced (default), or 0 then geometric from 0.001 to 1: denser at small λ, "
        "where a table whose priciest model costs far more than the rest makes its trade-offs",
    )
    offline.add_argument(
        "--scoring",
        choices=SCORING_RULES,
        default="raw",
        help="what a score cell counts as, for fitting and scoring (router_service.data.scoring): 'accuracy' is "
        "what papers report for model7 (a probability > 0 is correct); default raw",
    )
    offline.add_argument(
        "--categories",
        default="labels",
        metavar="labels|cluster|cluster:K",
        help="fit on the tables' task labels (default), or hide them so the category strategy clusters the "
        "prompts (k by silhouette, or K); evaluation keeps the labels for per-task figures",
    )
    offline.add_argument("--no-plot", action="store_true", help="skip pareto.png")

    online = commands.add_parser("online", help="send a dataset to a running service over HTTP and grade it")
    online.add_argument(
        "--endpoint", required=True, metavar="URL", help="OpenAI base URL of the service, e.g. http://127.0.0.1:8000/v1"
    )
    online.add_argument(
        "--dataset", required=True, metavar="FILE", help='JSONL of {"messages" or "prompt", "answer", "category"?}'
    )
    online.add_argument(
        "--models",
        type=_csv_list,
        default=["coe"],
        metavar="M1,M2,...",
        help="'coe' and/or expert ids; each answers every prompt (default: coe). "
        "'all' = coe plus every expert the service lists",
    )
    online.add_argument("--concurrency", type=int, default=8, metavar="N")
    online.add_argument(
        "--routing",
        type=json.loads,
        metavar="JSON",
        help="per-request routing options for model coe, e.g. '{\"cost_weight\": 0.9}'",
    )
    online.add_argument("--grader", choices=list(GRADERS), default="auto", help='rows with their own "grader" keep it')
    online.add_argument("--max-tokens", type=int, default=32)
    online.add_argument("--limit", type=int, metavar="N", help="only the first N prompts")
    online.add_argument("--api-key", default=os.environ.get("COE_API_KEY"))
    online.add_argument("--out", default="out/online", metavar="DIR")
    return parser


def run_online_command(args: argparse.Namespace) -> int:
    import httpx

    from eval.online import run_online

    models = args.models
    if models == ["all"]:
        listed = httpx.get(
            f"{args.endpoint.rstrip('/')}/models",
            timeout=30,
            headers={"authorization": f"Bearer {args.api_key}"} if args.api_key else {},
        ).json()
        models = [m["id"] for m in listed["data"]]
    results = run_online(
        args.endpoint,
        args.dataset,
        models,
        args.out,
        concurrency=args.concurrency,
        routing=args.routing,
        max_tokens=args.max_tokens,
        grader=args.grader,
        limit=args.limit,
        api_key=args.api_key,
    )
    from eval.online import report_markdown

    print(report_markdown(results))
    print(f"wrote {args.out}/results.json, {args.out}/report.md")
    return 0


def run_offline_command(args: argparse.Namespace) -> int:
    from eval.embed_cache import CachedEmbedder
    from eval.offline import lambda_grid, run_offline
    from eval.report import markdown_table, report_rows, write_outputs
    from router_service.routing.embedding import make_embedder

    if args.test and args.cv is not None:
        raise OfflineConfigError("--cv runs cross-validation on --train; it cannot be combined with --test")
    if not args.test and args.cv is None:
        raise OfflineConfigError("give --test FILE [FILE ...] or --cv K")
    if args.grid < 2:
        raise OfflineConfigError("--grid needs at least 2 points")
    prices = load_prices(args.prices) if args.prices else None
    train = load_tables(args.train, prices=prices, models=args.models)
    test = load_tables(args.test, prices=prices, models=train.models) if args.test else None
    embedder = CachedEmbedder(make_embedder(args.embedder, backend=args.embedder_backend, keep=args.embedder_keep))
    lambdas = lambda_grid(args.grid, args.grid_spacing)
    results = run_offline(
        train,
        test,
        strategies=args.strategies,
        embedder=embedder,
        cv=args.cv,
        seed=args.seed,
        lambdas=lambdas,
        prices=prices,
        scoring=args.scoring,
        categories=args.categories,
    )
    results["train_files"] = [str(p) for p in args.train]
    results["test_files"] = [str(p) for p in args.test or []]
    results["embedding_cache"] = {"dir": str(embedder.directory), "hits": embedder.hits, "misses": embedder.misses}
    paths = write_outputs(results, args.out, plot=not args.no_plot)
    print(
        f"{results['protocol']}: {results['n_test']} prompts, {len(results['models'])} models, "
        f"run {results['run_seconds']:.1f} s (embedding {results['embed_seconds']:.1f} s, "
        f"{embedder.misses} prompts newly embedded)"
    )
    print(markdown_table(report_rows(results)))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "offline":
            return run_offline_command(args)
        if args.command == "online":
            return run_online_command(args)
    except (TableFormatError, OfflineConfigError, CoEError, RoutingError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
