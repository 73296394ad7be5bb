"""The offline eval's outputs: results.json, report.md (the method table, per-task quality with
intervals, per-task AIQ, single models) and the Pareto plot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, np.integer)) or (abs(value) >= 1 and float(value).is_integer()):
        return str(int(value))  # call counts of cost-free tables read better without decimals
    return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.{digits}f}"


def report_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """One row per baseline and strategy: the columns of report.md's table."""
    base = results["baselines"]
    oracle_q = base["oracle"]["quality"]
    bs_cost = base["best_single"]["cost"]

    def row(
        name: str,
        quality: float | None,
        cost: float | None,
        aiq: float | None,
        missing: int | None,
        fit: float | None = None,
        route: float | None = None,
    ) -> list[str]:
        gap = None if quality is None else oracle_q - quality
        rel = None if cost is None or not bs_cost else cost / bs_cost
        return [
            name,
            _fmt(quality),
            _fmt(cost),
            _fmt(aiq),
            _fmt(gap),
            _fmt(rel, 3),
            _fmt(missing),
            _fmt(fit, 3),
            _fmt(route, 3),
        ]

    rows = [
        row("oracle", oracle_q, base["oracle"]["cost"], None, base["oracle"].get("missing")),
        row(
            f"best_single ({base['best_single']['model']})",
            base["best_single"]["quality"],
            bs_cost,
            None,
            base["best_single"].get("missing"),
        ),
        row(
            f"random (seed {base['random'].get('seed', '?')})",
            base["random"]["quality"],
            base["random"]["cost"],
            None,
            base["random"].get("missing"),
        ),
        row("zero_router (hull of single models)", None, None, base["zero_router"]["aiq"], None),
    ]
    task_aiq = base.get("task_zero_router", {}).get("aiq")
    if task_aiq is not None:
        rows.append(row("task_zero_router (per-task hulls, best mix; in-sample)", None, None, task_aiq, None))
    for name, s in results["strategies"].items():
        label = f"{name} (λ={s['cost_weight']})" if s.get("has_tradeoff") else name
        rows.append(
            row(label, s["quality"], s["cost"], s["aiq"], s.get("missing"), s["fit_seconds"], s["route_ms_per_prompt"])
        )
    return rows


REPORT_COLUMNS = [
    "method",
    "quality",
    "cost",
    "AIQ",
    "gap to oracle",
    "cost / best_single",
    "missing",
    "fit s",
    "route ms/prompt",
]


def markdown_table(rows: Sequence[Sequence[str]], columns: Sequence[str] = REPORT_COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_report(results: Mapping[str, Any]) -> str:
    cost_unit = (
        "total $ over the evaluated prompts"
        if results.get("has_costs")
        else "calls (table has no costs: every call costs 1)"
    )
    lines = [
        "# Offline routing evaluation",
        "",
        f"- protocol: {results.get('protocol')}; seed {results.get('seed')}; embedder {results.get('embedder')}",
        f"- prompts: {results['n_train']} train, {results['n_test']} evaluated; {len(results['models'])} models",
        "- quality: mean score of the chosen model (missing score = 0; `missing` counts those prompts)",
        f"- cost: {cost_unit}",
        f"- AIQ: RouterBench area under the non-decreasing convex hull of the λ-sweep curve, flat to the "
        f"reference cost {_fmt(results.get('reference_cost'))}, divided by it (– for strategies without "
        f"a trade-off parameter, and for tables without costs)",
        f"- run time: {_fmt(results.get('run_seconds'), 3)} s (embedding {_fmt(results.get('embed_seconds'), 3)} s)",
        "",
        markdown_table(report_rows(results)),
        "",
        *_per_task_section(results),
        *_aiq_section(results),
        "## Single models",
        "",
        markdown_table(
            [[m, _fmt(o["quality"]), _fmt(o["cost"]), _fmt(o["missing"])] for m, o in results["single_models"].items()],
            ["model", "quality", "cost", "missing"],
        ),
        "",
    ]
    return "\n".join(lines)


def _per_task_section(results: Mapping[str, Any]) -> list[str]:
    """report.md's per-task table: quality per task and the macro average, for every method."""
    base = results["baselines"]
    methods = {"oracle": base["oracle"], f"best_single ({base['best_single']['model']})": base["best_single"]}
    methods.update(results["strategies"])
    tasks = sorted(base["oracle"].get("per_task", {}))
    if not tasks:
        return []

    def span(values: list[float] | None) -> str:
        return f"[{_fmt(values[0])}, {_fmt(values[1])}]" if values else "–"

    rows = []
    for name, m in methods.items():
        gain = m.get("gain_over_best_single")
        rows.append(
            [
                name,
                *(_fmt(m["per_task"][t]) for t in tasks),
                _fmt(m["macro_quality"]),
                span((m.get("quality_ci95") or {}).get("macro")),
                f"{_fmt(gain['macro'])} {span(gain['ci95']['macro'])}" if gain else "–",
            ]
        )
    return [
        f"## Per task (scoring: {results.get('scoring', 'raw')}; macro = unweighted mean over tasks; "
        "95% intervals from a stratified bootstrap over prompts, the gain's paired)",
        "",
        markdown_table(rows, ["method", *tasks, "macro", "macro 95% CI", "macro gain vs best_single [95% CI]"]),
        "",
    ]


def _aiq_section(results: Mapping[str, Any]) -> list[str]:
    """report.md's per-task AIQ table (tables with costs and tasks only)."""
    per_task = results.get("aiq_per_task") or {}
    if not per_task:
        return []
    names = list(next(iter(per_task.values())))
    rows = [[task, *(_fmt(values.get(n)) for n in names)] for task, values in per_task.items()]
    return [
        "## AIQ per task (each task against its own reference cost)",
        "",
        markdown_table(rows, ["task", *names]),
        "",
    ]


def write_outputs(results: Mapping[str, Any], out_dir: str | Path, *, plot: bool = True) -> dict[str, Path]:
    """results.json, report.md and (unless plot=False) pareto.png into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "report": out / "report.md"}
    paths["results"].write_text(json.dumps(_jsonable(results), indent=2) + "\n", encoding="utf-8")
    paths["report"].write_text(render_report(results), encoding="utf-8")
    if plot:
        from eval.plots import plot_pareto  # matplotlib import is slow; skip it when not plotting

        paths["pareto"] = plot_pareto(results, out / "pareto.png")
    return paths


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
