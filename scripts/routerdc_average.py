"""Print each method's average over RouterDC's five in-distribution tasks from an eval results.json.

RouterDC (arXiv 2409.19886) reports the unweighted mean of per-task accuracy over MMLU, GSM8K, CMMLU,
ARC-C and HumanEval; model7's training tables add ARC-Easy, which this average leaves out. The last
line is the ceiling of a router that is told each prompt's task.
Usage: python scripts/routerdc_average.py out/model7-cv5-accuracy/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TASKS = ("mmlu", "gsm8k", "cmmlu", "arc_challenge", "humaneval")


def main(path: str) -> None:
    results = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = {"oracle": results["baselines"]["oracle"], **results["single_models"], **results["strategies"]}
    print(f"scoring: {results.get('scoring', 'raw')}; average over {', '.join(TASKS)}")
    for name, row in rows.items():
        print(f"{100 * sum(row['per_task'][t] for t in TASKS) / len(TASKS):6.2f}  {name}")
    # The best a router told each prompt's task could do: that task's best single model, chosen on the
    # very prompts it is scored on (in-sample, so it flatters).
    singles = results["single_models"].values()
    best = {t: max(row["per_task"][t] for row in singles) for t in TASKS}
    print(f"{100 * sum(best.values()) / len(TASKS):6.2f}  each task's best single model (in-sample)")
    print("        " + ", ".join(f"{t} {best[t]:.4f}" for t in TASKS))


if __name__ == "__main__":
    main(sys.argv[1])
