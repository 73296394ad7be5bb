"""`python -m zoo {build,dataset,list}`: build the specialist zoo and write its test set.

  build   [--out models/zoo] [--only NAME ...] [--jobs 2] [--force]   (each build passes its gate or fails)
  dataset --out eval/data/zoo_heldout.jsonl [--n-per-skill 50]       (skills' held-out split + general test)
  list    the specialists, their sizes, parameter counts, prices and gates

The generalist is converted with `python -m zoo.gguf`, and the routers are fitted on the built experts'
measured quality with `python -m zoo.routers` (both also happen at the default deployment's first start).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from zoo import tasks
from zoo.build import ZOO_EXPERTS, build_all


def _cmd_build(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    results = build_all(args.out, args.only, jobs=args.jobs, force=args.force)
    total = time.perf_counter() - started
    print("\n| expert | params | cached | build s | train s | steps | validation (gate) | held-out accuracy |")
    print("|---|---:|---|---:|---:|---:|---|---|")
    for name, r in results.items():
        acc = r.get("heldout_accuracy") or ""
        if isinstance(acc, dict):
            acc = ", ".join(f"{k} {v:.2f}" for k, v in acc.items())
        print(
            f"| {name} | {ZOO_EXPERTS[name].params:,} | {r['cached']} | {r['seconds']:.1f} | "
            f"{r.get('train_seconds') or ''} | {r.get('train_steps') or ''} | "
            f"{r.get('validation_accuracy')} ({ZOO_EXPERTS[name].gate}) | {acc} |"
        )
    print(f"\nzoo build total: {total:.1f}s wall ({len(results)} experts, jobs={args.jobs}) -> {args.out}")
    return 0


def test_rows(n_per_skill: int = 50, seed: int = 0) -> list[dict]:
    """The online eval's test set: each skill's held-out split, then the general bank's test split.

    Every row is graded with "contains", the rule the builds' quality records use (zoo.quality)."""
    from zoo import general
    from zoo.quality import GENERAL_CATEGORY, GRADER

    rows: list[dict[str, Any]] = [
        {**ex.to_json(), "grader": GRADER} for ex in tasks.heldout_set(n_per_skill, seed=seed)
    ]
    rows += [
        {"prompt": prompt, "answer": answers, "category": GENERAL_CATEGORY, "grader": GRADER}
        for prompt, answers in general.general_examples("test")
    ]
    return rows


def _cmd_dataset(args: argparse.Namespace) -> int:
    rows = test_rows(args.n_per_skill, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["category"]] = counts.get(row["category"], 0) + 1
    print(f"wrote {len(rows)} test examples to {out}: {counts}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    print("| expert | skills | layers x hidden | params | $/Mtok | first phase | step cap | gate |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for s in ZOO_EXPERTS.values():
        print(
            f"| {s.name} | {', '.join(s.skills)} | {s.size.layers} x {s.size.hidden} | {s.params:,} | "
            f"{s.cost_per_mtok} | {s.steps} | {s.max_steps} | {s.gate} |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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

    p = sub.add_parser("list", help="print the zoo's experts")
    p.set_defaults(func=_cmd_list)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
