"""Does a router-trained encoder route better than the packaged MiniLM? One seeded split, side by side.

    python bench/router_encoder.py --tables ../shared/data/routing/model7/*.json --out out/bench-encoder \\
        [--scoring accuracy] [--strategies category,stack] [--test-fraction 0.2] [--seed 0]

1. Splits every question/scores JSON table, per file, into train and test rows (seeded), written under
   OUT/split/{train,test}/ with the original file names (so task labels are kept).
2. Trains the encoder on the train split only: `python -m zoo.router_encoder` (its time is printed).
3. Runs `python -m eval offline --train split/train --test split/test` twice with the same strategies,
   once on the packaged MiniLM and once on the trained encoder, and prints both reports' per-task
   accuracy and the average over RouterDC's five tasks.

Prints; never gates anything. The test rows never reach the encoder, the strategies or their searches.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROUTERDC_TASKS = ("mmlu", "gsm8k", "cmmlu", "arc_challenge", "humaneval")


def split_tables(tables: list[str], out: Path, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    train_files: list[str] = []
    test_files: list[str] = []
    for path in tables:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
        order = np.random.default_rng(seed).permutation(len(rows))
        n_test = int(round(len(rows) * fraction))
        parts = {"test": sorted(order[:n_test].tolist()), "train": sorted(order[n_test:].tolist())}
        for part, idx in parts.items():
            target = out / "split" / part / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps([rows[i] for i in idx]), encoding="utf-8")
            (train_files if part == "train" else test_files).append(str(target))
    return train_files, test_files


def run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", required=True)
    parser.add_argument("--out", default="out/bench-encoder")
    parser.add_argument("--scoring", default="accuracy")
    parser.add_argument("--strategies", default="category,stack")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out)
    train, test = split_tables(args.tables, out, args.test_fraction, args.seed)
    encoder = out / "encoder"
    py = sys.executable
    train_s = run(
        [
            py,
            "-m",
            "zoo.router_encoder",
            "--train",
            *train,
            "--scoring",
            args.scoring,
            "--out",
            str(encoder),
            "--epochs",
            str(args.epochs),
            "--seed",
            str(args.seed),
        ]
    )
    results = {}
    for label, embedder in (("minilm", None), ("router-encoder", str(encoder))):
        cmd = [
            py,
            "-m",
            "eval",
            "offline",
            "--train",
            *train,
            "--test",
            *test,
            "--scoring",
            args.scoring,
            "--strategies",
            args.strategies,
            "--no-plot",
            "--out",
            str(out / label),
        ]
        if embedder:
            cmd += ["--embedder", embedder]
        run(cmd)
        results[label] = json.loads((out / label / "results.json").read_text(encoding="utf-8"))
    print(f"\nencoder training: {train_s:.0f} s wall (python -m zoo.router_encoder, {args.epochs} epoch)")
    tasks = sorted(results["minilm"]["baselines"]["oracle"]["per_task"])
    print("| embedder | method | " + " | ".join(tasks) + " | RouterDC average (5) |")
    print("|---|---|" + "---|" * (len(tasks) + 1))
    for label, res in results.items():
        rows = {"best_single": res["baselines"]["best_single"], **res["strategies"]}
        for name, row in rows.items():
            per = row["per_task"]
            avg = 100 * sum(per[t] for t in ROUTERDC_TASKS if t in per) / len(ROUTERDC_TASKS)
            print(f"| {label} | {name} | " + " | ".join(f"{per[t]:.4f}" for t in tasks) + f" | {avg:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
