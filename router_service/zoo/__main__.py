"""`python -m router_service.zoo {build,dataset,table,list}`: build the expert zoo and its data files.

  build   [--out models/zoo] [--only NAME ...] [--jobs 2] [--force]
  dataset --out eval/data/zoo_heldout.jsonl [--n-per-skill 50]
  table   --models-dir models/zoo --out eval/data/zoo_table.json --prices eval/data/zoo_prices.json
          [--n-per-skill 150] [--build]
  list    the experts, their sizes, parameter counts and prices
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from router_service.zoo import tasks
from router_service.zoo.build import ZOO_EXPERTS, build_all, build_expert, is_current


def _cmd_build(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    results = build_all(args.out, args.only, jobs=args.jobs, force=args.force)
    total = time.perf_counter() - started
    print("\n| expert | params | cached | build s | train s | held-out accuracy |")
    print("|---|---:|---|---:|---:|---|")
    for name, r in results.items():
        acc = r.get("heldout_accuracy") or ""
        if isinstance(acc, dict):
            acc = ", ".join(f"{k} {v:.2f}" for k, v in acc.items())
        print(f"| {name} | {ZOO_EXPERTS[name].params:,} | {r['cached']} | {r['seconds']:.1f} | "
              f"{r.get('train_seconds') or ''} | {acc} |")
    print(f"\nzoo build total: {total:.1f}s wall ({len(results)} experts, jobs={args.jobs}) -> {args.out}")
    return 0


def _cmd_dataset(args: argparse.Namespace) -> int:
    examples = tasks.heldout_set(args.n_per_skill, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_json()) + "\n")
    counts = {s: sum(ex.skill == s for ex in examples) for s in tasks.SKILLS}
    print(f"wrote {len(examples)} held-out examples to {out}: {counts}")
    return 0


def table_examples(n_per_skill: int, seed: int = 1) -> list[tasks.Example]:
    """Training-distribution prompts (never in the held-out set) for the routing table."""
    return [ex for skill in tasks.SKILLS for ex in tasks.generate(skill, n_per_skill, seed=seed, split="train")]


def _cmd_table(args: argparse.Namespace) -> int:
    from router_service.zoo.train import greedy_answers, load_model

    examples = table_examples(args.n_per_skill, seed=args.seed)
    models_dir = Path(args.models_dir)
    names = list(ZOO_EXPERTS)
    scores: dict[str, list[int]] = {}
    for name in names:
        path = models_dir / name
        if args.build:
            build_expert(name, path)
        elif not is_current(ZOO_EXPERTS[name], path):
            print(f"{path} is missing or stale; run `python -m router_service.zoo build --out {models_dir}` "
                  "or pass --build", file=sys.stderr)
            return 2
        started = time.perf_counter()
        preds = greedy_answers(load_model(path), [ex.prompt for ex in examples])
        scores[name] = [int(tasks.is_correct(p, ex.answer)) for p, ex in zip(preds, examples)]
        per_skill = {s: sum(v for v, ex in zip(scores[name], examples) if ex.skill == s)
                     / max(1, sum(ex.skill == s for ex in examples)) for s in tasks.SKILLS}
        print(f"{name}: {time.perf_counter() - started:.1f}s " + ", ".join(f"{s} {a:.2f}" for s, a in per_skill.items()))
    rows = [
        {"question": ex.prompt, "category": ex.skill, "scores": {name: scores[name][i] for name in names}}
        for i, ex in enumerate(examples)
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n")  # one row per line
    prices = {name: {"input_price": s.input_price, "output_price": s.output_price} for name, s in ZOO_EXPERTS.items()}
    Path(args.prices).parent.mkdir(parents=True, exist_ok=True)
    Path(args.prices).write_text(json.dumps(prices, indent=2) + "\n")
    print(f"wrote {len(rows)} rows to {out} and prices to {args.prices}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    print("| expert | skills | layers x hidden | params | $/Mtok | steps | generalist |")
    print("|---|---|---|---:|---:|---:|---|")
    for s in ZOO_EXPERTS.values():
        print(f"| {s.name} | {', '.join(s.skills)} | {s.size.layers} x {s.size.hidden} | {s.params:,} | "
              f"{s.cost_per_mtok} | {s.steps} | {s.generalist} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router_service.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="train (or reuse) every zoo expert")
    p.add_argument("--out", default="models/zoo")
    p.add_argument("--only", nargs="+", choices=list(ZOO_EXPERTS), default=None)
    p.add_argument("--jobs", type=int, default=2, help="experts trained at once, one thread each (default 2)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cached build is current")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("dataset", help="write the held-out test set as JSONL")
    p.add_argument("--out", required=True)
    p.add_argument("--n-per-skill", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_dataset)

    p = sub.add_parser("table", help="measure every expert on training-distribution prompts")
    p.add_argument("--models-dir", default="models/zoo")
    p.add_argument("--out", required=True)
    p.add_argument("--prices", required=True)
    p.add_argument("--n-per-skill", type=int, default=150)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--build", action="store_true", help="build missing or stale experts first")
    p.set_defaults(func=_cmd_table)

    p = sub.add_parser("list", help="print the zoo's experts")
    p.set_defaults(func=_cmd_list)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
