"""Offline evaluation: fit strategies on routing tables, route held-out prompts, score the choices.

Protocol (documented in the README section):
* Hold-out: fit on the train tables, evaluate on the test tables.
* `cv=K`: K folds over a seeded shuffle of the train tables; each fold's strategies are fitted on the
  other K-1 folds, and the held-out choices of all folds are pooled, so every prompt is scored exactly
  once by a router that never saw it. Metrics are computed once on the pooled choices (not averaged
  per fold). best_single is picked per fold on that fold's training part.
* Every prompt is embedded once (through the on-disk cache) and the vectors are passed to `fit` and
  in `Query.embedding`, so neither fitting nor the λ sweep re-embeds.
* Default operating point: λ = the strategy's `cost_weight` attribute when it has one, else 0.5.
  Strategies with `has_tradeoff` are also routed at every λ of the grid to give `curve`; the others
  report `curve = [[cost, quality]]` and `aiq = null`. AIQ is also null for tables without costs,
  where every router costs the same and the area is degenerate.
* `fit_seconds` is the mean fit time per fold; `route_ms_per_prompt` is routing time at the default λ
  with embeddings precomputed (pure strategy time), per prompt.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from eval import metrics
from eval.datasets import kfold_indices
from router_service.data.loaders import estimate_tokens
from router_service.data.scoring import apply_scoring
from router_service.data.table import RoutingTable
from router_service.domain import ExpertCard, Query
from router_service.routing.embedding import Embedder, embedder_keep
from router_service.routing.strategies.base import RoutingStrategy, get_strategy, known_strategies, strategy_class
from router_service.routing.strategies.baselines import best_single_index

# Rule-based or reference routers: evaluated as baselines, not as default strategies.
BASELINE_STRATEGIES = frozenset({"fixed", "keyword", "random", "best_single"})
DEFAULT_COST_WEIGHT = 0.5


def lambda_grid(points: int, spacing: str = "linear") -> tuple[float, ...]:
    """`points` λ values in [0, 1]: evenly spaced, or 0 then geometric from 0.001 to 1.

    λ weighs cost normalised by the priciest model's mean cost, so when the cheap models cost a few
    percent of it (RouterBench: 1.6–8.4% of GPT-4's) most trade-offs happen below λ ≈ 0.2, between
    two points of an even grid; a geometric grid samples that stretch."""
    if points < 2:
        raise ValueError("a λ grid needs at least 2 points")
    if spacing == "geometric":
        return (0.0, *np.round(np.geomspace(1e-3, 1.0, points - 1), 5).tolist())
    return tuple(np.round(np.linspace(0.0, 1.0, points), 4).tolist())


DEFAULT_LAMBDAS = lambda_grid(11)


class OfflineConfigError(ValueError):
    """Inconsistent evaluation inputs (options, train/test tables); the CLI prints it and exits 2."""


def default_strategies() -> list[str]:
    return [name for name in known_strategies() if name not in BASELINE_STRATEGIES]


def expert_cards(table: RoutingTable, prices: Mapping[str, Mapping[str, float]] | None = None) -> list[ExpertCard]:
    """One card per table model (id = model name) with a $/Mtok price for cost-aware tie-breaks.

    With a price file the prices are used as given. Otherwise, for a table with costs, each model's
    price is its total cost over the table divided by the estimated tokens (table_io's estimate), i.e.
    an effective blended $/Mtok applied to input and output alike. Without either, every card is free.
    """
    if prices is not None:
        return [
            ExpertCard(
                id=m, input_cost_per_mtok=prices[m]["input_price"], output_cost_per_mtok=prices[m]["output_price"]
            )
            for m in table.models
        ]
    if table.costs is None or len(table) == 0:
        return [ExpertCard(id=m) for m in table.models]
    input_tokens, output_tokens = estimate_tokens(table.prompts, table.categories)
    tokens = float(np.sum(input_tokens + output_tokens))
    per_model = np.nansum(table.costs, axis=0) / max(tokens, 1.0) * 1e6
    return [
        ExpertCard(id=m, input_cost_per_mtok=float(p), output_cost_per_mtok=float(p))
        for m, p in zip(table.models, per_model)
    ]


@dataclass
class PooledRun:
    """Held-out choices (model indices) of one strategy, pooled over folds."""

    default: np.ndarray
    sweep: np.ndarray | None  # (n_lambdas, n_prompts) for trade-off strategies
    cost_weight: float
    fit_seconds: list[float] = field(default_factory=list)
    route_seconds: float = 0.0


def parse_categories(spec: str) -> tuple[bool, int | None]:
    """(cluster?, k): `labels` → fit on the table's task labels; `cluster` → hide them, k by the category
    strategy's silhouette rule; `cluster:K` → hide them, K clusters."""
    if spec == "labels":
        return False, None
    if spec == "cluster":
        return True, None
    k = spec.removeprefix("cluster:")
    if spec.startswith("cluster:") and k.isdigit() and int(k) >= 2:
        return True, int(k)
    raise OfflineConfigError(f"--categories '{spec}': expected labels, cluster or cluster:K with K >= 2")


def _make_strategy(name: str, seed: int, n_clusters: int | None = None) -> RoutingStrategy:
    cls = strategy_class(name)
    accepted = cls.param_names() if hasattr(cls, "param_names") else []
    params: dict[str, Any] = {"seed": seed} if "seed" in accepted else {}
    if n_clusters is not None and "n_clusters" in accepted:
        params["n_clusters"] = n_clusters
    return get_strategy(name, **params)


def _fit(strategy: RoutingStrategy, table: RoutingTable, embeddings: np.ndarray | None) -> None:
    # Pass the precomputed vectors when the strategy's fit accepts them; else it uses the (cached) embedder.
    if embeddings is not None and "embeddings" in inspect.signature(strategy.fit).parameters:
        strategy.fit(table, embeddings=embeddings)
    else:
        strategy.fit(table)


def _route(
    strategy: RoutingStrategy,
    prompts: Sequence[str],
    embeddings: np.ndarray | None,
    experts: Sequence[ExpertCard],
    cost_weight: float | None,
    index: Mapping[str, int],
) -> np.ndarray:
    queries = [
        Query(text=p, cost_weight=cost_weight, embedding=None if embeddings is None else embeddings[i])
        for i, p in enumerate(prompts)
    ]
    decisions = strategy.route_batch(queries, experts)
    try:
        return np.array([index[d.expert_ids[0]] for d in decisions], dtype=int)
    except KeyError as exc:
        raise RuntimeError(f"strategy '{strategy.name}' chose {exc}, which is not a table model") from None


def _embed_all(embedder: Embedder | None, prompts: Sequence[str]) -> np.ndarray | None:
    if embedder is None or not prompts:
        return None
    return np.asarray(embedder.encode(list(prompts)), dtype=np.float32)


def run_offline(
    train: RoutingTable,
    test: RoutingTable | None = None,
    *,
    strategies: Sequence[str] | None = None,
    embedder: Embedder | None = None,
    cv: int | None = None,
    seed: int = 0,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    prices: Mapping[str, Mapping[str, float]] | None = None,
    scoring: str = "raw",
    categories: str = "labels",
) -> dict[str, Any]:
    """Evaluate `strategies` and the baselines; returns the results.json dictionary.

    `scoring` (router_service.data.scoring) applies to training and evaluation alike. `categories`
    `cluster[:K]` hides the task labels from the strategies' training (the category strategy then
    clusters); evaluation keeps them, so per-task figures stay comparable.
    """
    started = time.perf_counter()
    cluster, n_clusters = parse_categories(categories)
    train = apply_scoring(train, scoring)
    test = apply_scoring(test, scoring) if test is not None else None
    if (test is None) == (cv is None):
        raise OfflineConfigError("give either test tables or cv=K (K-fold cross-validation on the train tables)")
    names = list(strategies) if strategies is not None else default_strategies()
    for name in names:
        strategy_class(name)  # unknown names fail here, before any embedding work
    if test is not None and test.models != train.models:
        raise OfflineConfigError(f"test tables have models {test.models}, train tables {train.models}")
    if test is not None and test.has_costs != train.has_costs:
        raise OfflineConfigError("train and test tables must both have costs or both have none (pass --prices)")

    if cv is not None:
        evaluated = train
        try:
            folds = kfold_indices(len(train), cv, seed)
        except ValueError as exc:
            raise OfflineConfigError(str(exc)) from None
        splits = [(train.subset(tr), train.subset(te), tr, te) for tr, te in folds]
    else:
        assert test is not None  # checked above: exactly one of test and cv
        evaluated = test
        splits = [(train, test, np.arange(len(train)), np.arange(len(test)))]

    needs_embedding = any(getattr(strategy_class(n), "needs_embedding", False) for n in names)
    embed_started = time.perf_counter()
    train_emb = _embed_all(embedder if needs_embedding else None, train.prompts)
    eval_emb = train_emb if cv is not None else _embed_all(embedder if needs_embedding else None, evaluated.prompts)
    embed_seconds = time.perf_counter() - embed_started

    model_index = {m: j for j, m in enumerate(train.models)}
    n_eval = len(evaluated)
    best_single_choices = np.zeros(n_eval, dtype=int)
    best_single_models: list[str] = []
    for fold_train, _, _, held_out in splits:
        best = best_single_index(fold_train)
        best_single_choices[held_out] = best
        best_single_models.append(train.models[best])

    runs: dict[str, PooledRun] = {}
    if cluster:
        splits = [
            (dataclasses.replace(tr, categories=None), ev, tr_rows, ev_rows) for tr, ev, tr_rows, ev_rows in splits
        ]
    for name in names:
        runs[name] = _run_strategy(
            name, splits, train_emb, eval_emb, n_eval, model_index, lambdas, seed, embedder, prices, n_clusters
        )

    results = _summarise(train, evaluated, runs, best_single_choices, best_single_models, seed)
    results.update(
        {
            "protocol": f"{cv}-fold cross-validation, pooled held-out predictions" if cv else "train/test hold-out",
            "cv": cv,
            "scoring": scoring,
            "categories": categories,
            "seed": seed,
            "embedder": getattr(embedder, "name", None),
            "embedder_keep": embedder_keep(embedder) if embedder is not None else None,
            "embed_seconds": round(embed_seconds, 3),
            "lambdas": list(lambdas),
            "run_seconds": round(time.perf_counter() - started, 3),
        }
    )
    return results


def _run_strategy(
    name: str,
    splits: list,
    train_emb: np.ndarray | None,
    eval_emb: np.ndarray | None,
    n_eval: int,
    model_index: Mapping[str, int],
    lambdas: Sequence[float],
    seed: int,
    embedder: Embedder | None,
    prices: Mapping | None,
    n_clusters: int | None = None,
) -> PooledRun:
    tradeoff = bool(getattr(strategy_class(name), "has_tradeoff", False))
    run = PooledRun(
        default=np.zeros(n_eval, dtype=int),
        sweep=np.zeros((len(lambdas), n_eval), dtype=int) if tradeoff else None,
        cost_weight=DEFAULT_COST_WEIGHT,
    )
    steps = len(splits) * (2 + (len(lambdas) if tradeoff else 0))
    with tqdm(total=steps, desc=f"{name}", unit="step", leave=False) as bar:
        for fold_train, fold_eval, train_rows, eval_rows in splits:
            strategy = _make_strategy(name, seed, n_clusters)
            strategy.set_embedder(embedder)
            bar.set_postfix_str("fit")
            fit_started = time.perf_counter()
            _fit(strategy, fold_train, None if train_emb is None else train_emb[train_rows])
            run.fit_seconds.append(time.perf_counter() - fit_started)
            bar.update()

            own_weight = getattr(strategy, "cost_weight", None)
            run.cost_weight = float(own_weight) if own_weight is not None else DEFAULT_COST_WEIGHT
            experts = expert_cards(fold_train, prices)
            emb = None if eval_emb is None else eval_emb[eval_rows]
            bar.set_postfix_str(f"route λ={run.cost_weight}")
            route_started = time.perf_counter()
            run.default[eval_rows] = _route(strategy, fold_eval.prompts, emb, experts, run.cost_weight, model_index)
            run.route_seconds += time.perf_counter() - route_started
            bar.update()
            if run.sweep is not None:
                for k, weight in enumerate(lambdas):
                    bar.set_postfix_str(f"sweep λ={weight}")
                    run.sweep[k, eval_rows] = _route(
                        strategy, fold_eval.prompts, emb, experts, float(weight), model_index
                    )
                    bar.update()
    return run


def _summarise(
    train: RoutingTable,
    evaluated: RoutingTable,
    runs: Mapping[str, PooledRun],
    best_single_choices: np.ndarray,
    best_single_models: list[str],
    seed: int,
) -> dict[str, Any]:
    singles = metrics.single_model_points(evaluated)
    oracle = metrics.outcome(evaluated, metrics.oracle_choices(evaluated))
    best_single = metrics.outcome(evaluated, best_single_choices)
    random = metrics.outcome(evaluated, metrics.random_choices(len(evaluated), len(evaluated.models), seed))
    single_points = [[o.cost, o.quality] for o in singles.values()]

    strategy_rows: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        default = metrics.outcome(evaluated, run.default)
        if run.sweep is not None:
            curve = [[o.cost, o.quality] for o in (metrics.outcome(evaluated, c) for c in run.sweep)]
        else:
            curve = [[default.cost, default.quality]]
        strategy_rows[name] = {
            "quality": default.quality,
            "cost": default.cost,
            "missing": default.missing,
            "cost_weight": run.cost_weight,
            "has_tradeoff": run.sweep is not None,
            "curve": curve,
            "fit_seconds": round(float(np.mean(run.fit_seconds)), 4),
            "route_ms_per_prompt": round(1000.0 * run.route_seconds / max(len(evaluated), 1), 4),
            "choices": dict(Counter(evaluated.models[j] for j in run.default).most_common()),
            **_per_task(evaluated, run.default),
            **_intervals(evaluated, run.default, best_single_choices, seed),
            "per_prompt_choice": run.default.tolist(),
        }

    # One reference cost for every AIQ, so the numbers compare (RouterBench's shared max_x_value).
    max_cost = metrics.reference_cost([single_points] + [r["curve"] for r in strategy_rows.values()])
    aiq_defined = evaluated.has_costs
    for row in strategy_rows.values():
        row["aiq"] = metrics.aiq(row["curve"], max_cost) if (row["has_tradeoff"] and aiq_defined) else None
        row["gap_to_oracle"] = oracle.quality - row["quality"]
        row["cost_vs_best_single"] = row["cost"] / best_single.cost if best_single.cost else None

    oracle_choices = metrics.oracle_choices(evaluated)
    sweeps = {name: run.sweep for name, run in runs.items() if run.sweep is not None}
    aiq_per_task = metrics.per_task_aiq(evaluated, sweeps, set(sweeps))
    bs_model = Counter(best_single_models).most_common(1)[0][0]
    hull = metrics.nondecreasing_hull(single_points)
    task_curve = metrics.task_zero_router_curve(evaluated)
    return {
        "n_train": len(train),
        "n_test": len(evaluated),
        "models": list(evaluated.models),
        "has_costs": evaluated.has_costs,
        "baselines": {
            "oracle": {**oracle.to_dict(), **_per_task(evaluated, oracle_choices)},
            "best_single": {
                "model": bs_model,
                **best_single.to_dict(),
                **_per_task(evaluated, best_single_choices),
                **_intervals(evaluated, best_single_choices, None, seed),
                "per_prompt_choice": np.asarray(best_single_choices).tolist(),
                **({"models_per_fold": best_single_models} if len(best_single_models) > 1 else {}),
            },
            "random": {**random.to_dict(), "seed": seed},
            "zero_router": {
                "aiq": metrics.aiq(single_points, max_cost) if aiq_defined else None,
                "hull": hull.tolist(),
            },
            # Per-task zero routers mixed at the best pooled rate: the ceiling of task-only routing.
            "task_zero_router": {
                "aiq": metrics.aiq(task_curve, max_cost) if len(task_curve) else None,
                "curve": task_curve.tolist(),
            },
        },
        "single_models": {
            m: {**o.to_dict(), **_per_task(evaluated, np.full(len(evaluated), j))}
            for j, (m, o) in enumerate(singles.items())
        },
        "reference_cost": max_cost,
        "aiq_per_task": aiq_per_task,
        "strategies": strategy_rows,
    }


def _intervals(table: RoutingTable, choices: np.ndarray, baseline: np.ndarray | None, seed: int) -> dict[str, Any]:
    """95% bootstrap intervals of quality (pooled and macro) and, against `baseline` (the best single
    model), of the gain: a paired bootstrap over the same prompts."""
    scores = metrics.prompt_scores(table, choices)
    out: dict[str, Any] = {"quality_ci95": metrics.bootstrap_intervals(scores, table.categories, seed=seed)}
    if baseline is not None:
        gain = scores - metrics.prompt_scores(table, baseline)
        mine = metrics.macro_average(metrics.per_task_quality(table, choices))
        theirs = metrics.macro_average(metrics.per_task_quality(table, baseline))
        out["gain_over_best_single"] = {
            "pooled": float(gain.mean()),
            "macro": mine - theirs if mine is not None and theirs is not None else None,
            "ci95": metrics.bootstrap_intervals(gain, table.categories, seed=seed),
        }
    return out


def _per_task(table: RoutingTable, choices: np.ndarray) -> dict[str, Any]:
    """Per-task quality and its unweighted mean (the "average" papers report), when the table has tasks."""
    per_task = metrics.per_task_quality(table, choices)
    return {"per_task": per_task, "macro_quality": metrics.macro_average(per_task)} if per_task else {}
