"""Quality/cost of routing choices, the oracle/random baselines, and RouterBench's AIQ.

The best-single baseline is `router_service.routing.strategies.baselines.best_single_index`, the rule
`BestSingleStrategy` fits with, so the eval's baseline and the served strategy pick the same model.

Conventions (also in the README section):
* A routing choice is a model index per prompt. quality = mean score of the chosen model over the
  prompts, a missing (NaN) score counting 0; cost = the total cost of the chosen calls, a missing
  cost counting 0, and a table without costs costing 1 per call (so cost = number of prompts).
* AIQ (RouterBench, Hu et al. 2024): take the router's (cost, quality) points, keep the non-decreasing
  upper convex hull (mixing two routing configurations at random reaches any point on the segment
  between them, so anything below that hull is dominated), extend it flat to a reference cost
  `max_cost` shared by every router being compared, and divide the area under it by `max_cost`.
  The area starts at the hull's cheapest point: a router earns nothing for costs it cannot reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from router_service.data.table import RoutingTable


@dataclass(frozen=True)
class Outcome:
    quality: float
    cost: float
    missing: int  # prompts whose chosen model has no score (counted as 0 in quality)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def outcome(table: RoutingTable, choices: Sequence[int] | np.ndarray) -> Outcome:
    """Quality and cost of routing prompt i of `table` to model `choices[i]`."""
    idx = np.asarray(choices, dtype=int)
    if idx.shape != (len(table),):
        raise ValueError(f"need one choice per prompt: {idx.shape} vs {len(table)} prompts")
    if len(table) == 0:
        return Outcome(quality=0.0, cost=0.0, missing=0)
    rows = np.arange(len(table))
    raw = table.scores[rows, idx]
    return Outcome(
        quality=float(table.score_matrix()[rows, idx].mean()),
        cost=float(table.cost_matrix()[rows, idx].sum()),
        missing=int(np.isnan(raw).sum()),
    )


def oracle_choices(table: RoutingTable) -> np.ndarray:
    """Per prompt the best-scoring model; ties go to the cheapest, then to the first in table order."""
    scores = table.score_matrix()
    costs = table.cost_matrix()
    best = scores.max(axis=1, keepdims=True)
    tied_costs = np.where(scores == best, costs, np.inf)
    return tied_costs.argmin(axis=1)  # argmin returns the first index among equal costs


def random_choices(n_prompts: int, n_models: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_models, size=n_prompts)


def single_model_points(table: RoutingTable) -> dict[str, Outcome]:
    """Every model routed every prompt: the points the zero router interpolates between."""
    return {m: outcome(table, np.full(len(table), j)) for j, m in enumerate(table.models)}


def nondecreasing_hull(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Upper convex hull of (cost, quality) points along which quality never decreases, cost-sorted.

    1. Pareto front: scanning by increasing cost (best quality first at equal cost), keep a point only
       if it beats every cheaper point's quality.
    2. Upper hull (monotone chain): drop a middle point lying on or below the segment joining its
       neighbours, because a random mix of the two neighbours does at least as well at that cost.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return pts
    pts = pts[np.lexsort((-pts[:, 1], pts[:, 0]))]
    front: list[tuple[float, float]] = []
    for cost, quality in pts:
        if not front or quality > front[-1][1]:
            front.append((cost, quality))
    hull: list[tuple[float, float]] = []
    for point in front:
        while len(hull) >= 2 and _not_below_chord(hull[-2], hull[-1], point):
            hull.pop()
        hull.append(point)
    return np.array(hull, dtype=np.float64)


def _not_below_chord(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> bool:
    """True when b lies on or under the segment a→c (cross product of a→b and a→c is >= 0)."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]) >= 0


def aiq(points: Sequence[Sequence[float]] | np.ndarray, max_cost: float) -> float | None:
    """RouterBench AIQ of a (cost, quality) curve against reference cost `max_cost`; None if undefined.

    Undefined when there is no point, or when `max_cost` is not positive (e.g. every call free).
    """
    hull = nondecreasing_hull(points)
    if len(hull) == 0 or not max_cost > 0:
        return None
    reach = max(float(max_cost), float(hull[-1, 0]))
    extended = np.vstack([hull, [reach, hull[-1, 1]]])
    area = float(np.sum(np.diff(extended[:, 0]) * (extended[1:, 1] + extended[:-1, 1]) / 2.0))
    return area / reach


def reference_cost(curves: Sequence[Sequence[Sequence[float]]]) -> float:
    """The largest cost on any curve: the common right end of every AIQ integral."""
    costs = [float(p[0]) for curve in curves for p in curve]
    return max(costs) if costs else 0.0


def per_task_quality(table: RoutingTable, choices: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Mean quality of `choices` within each task (the table's categories), as papers report per task."""
    if table.categories is None:
        return {}
    idx = np.asarray(choices, dtype=int)
    scores = table.score_matrix()[np.arange(len(table)), idx]
    labels = np.asarray(table.categories)
    return {task: float(scores[labels == task].mean()) for task in sorted(set(table.categories))}


def macro_average(per_task: dict[str, float]) -> float | None:
    """The unweighted mean over tasks (RouterDC's "average"), or None without tasks."""
    return float(np.mean(list(per_task.values()))) if per_task else None


def prompt_scores(table: RoutingTable, choices: Sequence[int] | np.ndarray) -> np.ndarray:
    """The score each prompt got from its chosen model (missing = 0)."""
    idx = np.asarray(choices, dtype=int)
    return table.score_matrix()[np.arange(len(table)), idx]


def bootstrap_intervals(
    values: np.ndarray, tasks: Sequence[str] | None, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals of the pooled mean and of the macro (per-task) mean of `values`.

    Prompts are resampled within each task (a stratified bootstrap), so every replicate keeps the task
    sizes and the macro mean stays defined. Pass per-prompt differences to get the interval of a gain.
    """
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(tasks) if tasks is not None else np.zeros(len(values), dtype=int)
    rng = np.random.default_rng(seed)
    task_means = []
    sizes = []
    for task in sorted(set(labels.tolist())):
        block = values[labels == task]
        draws = rng.integers(0, len(block), size=(n_boot, len(block)))
        task_means.append(block[draws].mean(axis=1))
        sizes.append(len(block))
    means = np.stack(task_means)  # (tasks, n_boot)
    pooled = (means * np.asarray(sizes)[:, None]).sum(axis=0) / sum(sizes)
    tail = (1.0 - level) / 2 * 100

    def interval(samples: np.ndarray) -> list[float]:
        low, high = np.percentile(samples, [tail, 100 - tail])
        return [float(low), float(high)]

    return {"pooled": interval(pooled), "macro": interval(means.mean(axis=0)) if tasks is not None else None}


def task_zero_router_curve(table: RoutingTable) -> np.ndarray:
    """The best pooled (cost, quality) curve of a router that knows only each prompt's task.

    Within a task it can do no better than the zero router (the hull of the single models); across
    tasks it spends a budget where quality rises fastest: start every task at its cheapest hull point,
    then take the tasks' hull segments in order of decreasing slope (quality per $, pooled). Computed
    on the table it scores, so it is an in-sample ceiling: a router beating it pooled has per-prompt
    signal within a task. Empty when the table has no tasks or no costs.
    """
    if table.categories is None or not table.has_costs or len(table) == 0:
        return np.zeros((0, 2))
    labels = np.asarray(table.categories)
    start = np.zeros(2)
    segments: list[tuple[float, float, float]] = []
    for task in sorted(set(table.categories)):
        rows = np.flatnonzero(labels == task)
        part = table.subset(rows)
        weight = len(rows) / len(table)  # a task's mean quality counts by its share of the prompts
        hull = nondecreasing_hull([[o.cost, o.quality * weight] for o in single_model_points(part).values()])
        start += hull[0]
        for a, b in zip(hull[:-1], hull[1:]):
            segments.append(((b[1] - a[1]) / (b[0] - a[0]), b[0] - a[0], b[1] - a[1]))
    points = [start.copy()]
    for _, d_cost, d_quality in sorted(segments, key=lambda seg: -seg[0]):
        points.append(points[-1] + (d_cost, d_quality))
    return np.array(points)


def per_task_aiq(
    table: RoutingTable, sweeps: dict[str, np.ndarray], tradeoff: set[str]
) -> dict[str, dict[str, float | None]]:
    """AIQ per task, RouterBench's way: within each task, the zero router (hull of the single models)
    and every trade-off strategy's λ-sweep curve, all against that task's own reference cost.

    `sweeps` maps a strategy to its (λ, prompt) choice matrix; only names in `tradeoff` get an AIQ.
    Empty when the table has no tasks or no costs.
    """
    if table.categories is None or not table.has_costs:
        return {}
    labels = np.asarray(table.categories)
    out: dict[str, dict[str, float | None]] = {}
    for task in sorted(set(table.categories)):
        rows = np.flatnonzero(labels == task)
        part = table.subset(rows)
        singles = [[o.cost, o.quality] for o in single_model_points(part).values()]
        curves = {
            name: [[o.cost, o.quality] for o in (outcome(part, c[rows]) for c in sweep)]
            for name, sweep in sweeps.items()
            if name in tradeoff
        }
        reference = reference_cost([singles, *curves.values()])
        out[task] = {"zero_router": aiq(singles, reference)}
        out[task].update({name: aiq(curve, reference) for name, curve in curves.items()})
    return out
