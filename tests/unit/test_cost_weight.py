"""λ (cost_weight) does its job on a real routing table: raising it never makes decisions cost more.

Uses RouterBench arc-challenge (11 models with real costs) from the shared data directory
($COE_SHARED_DIR, else <repo>/../shared), skipped when absent, with the HashingEmbedder. Held-out
prompts (a seeded 80/20 split) are routed at each λ of a grid; the total cost of the decisions must be
non-increasing in λ up to a tolerance of 1% of the largest total (kNN/ridge estimates are not exactly
monotone in λ only through ties, so the tolerance is small).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from router_service.domain import ExpertCard, Query
from router_service.routing.embedding import HashingEmbedder
from router_service.routing.strategies.base import get_strategy
from tests.unit.test_strategies import fitted, held_out, make_experts

SHARED = Path(os.environ.get("COE_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared"))
ARC = SHARED / "data" / "routing" / "routerbench" / "arc_challenge_train.csv"
LAMBDAS = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def arc_split():
    if not ARC.is_file():
        pytest.skip(f"shared routing table not found at {ARC}")
    from router_service.data.loaders import load_tables

    table = load_tables([ARC])
    order = np.random.default_rng(0).permutation(len(table))
    cut = int(0.8 * len(table))
    vectors = HashingEmbedder().encode(table.prompts)  # once: hashing 1k few-shot prompts takes seconds
    return table.subset(order[:cut]), table.subset(order[cut:]), vectors[order[:cut]], vectors[order[cut:]]


@pytest.mark.parametrize("estimator", ["auto", "knn", "linear"])
def test_total_cost_falls_as_lambda_rises_on_routerbench(arc_split, estimator):
    train, test, train_vectors, vectors = arc_split
    strategy = get_strategy("cost_aware", estimator=estimator).set_embedder(HashingEmbedder())
    strategy.fit(train, embeddings=train_vectors)
    experts = [ExpertCard(id=m) for m in train.models]
    index = {m: j for j, m in enumerate(test.models)}
    costs, quality = test.cost_matrix(), test.score_matrix()
    totals, accuracy = [], []
    for weight in LAMBDAS:
        queries = [Query(text=p, embedding=v, cost_weight=weight) for p, v in zip(test.prompts, vectors)]
        picks = [index[d.primary] for d in strategy.route_batch(queries, experts)]
        rows = np.arange(len(picks))
        totals.append(float(costs[rows, picks].sum()))
        accuracy.append(float(quality[rows, picks].mean()))
    tolerance = TOLERANCE * max(totals)
    assert all(b <= a + tolerance for a, b in zip(totals, totals[1:])), totals
    assert totals[-1] < 0.25 * totals[0], totals  # λ = 1 really buys the cheap models
    cheapest = int(np.argmin(np.nanmean(train.costs, axis=0)))
    assert totals[-1] <= 1.1 * costs[:, cheapest].sum()
    assert accuracy[0] >= accuracy[-1]  # and λ = 0 buys quality
    print(estimator, [round(t / len(picks), 6) for t in totals], [round(a, 3) for a in accuracy])


def test_request_lambda_overrides_the_default(arc_split):
    train, test, train_vectors, vectors = arc_split
    strategy = get_strategy("cost_aware", cost_weight=1.0, estimator="knn", k=10)
    strategy.set_embedder(HashingEmbedder()).fit(train, embeddings=train_vectors)
    experts = [ExpertCard(id=m) for m in train.models]
    prompt, vector = test.prompts[0], vectors[0]
    assert strategy.route(Query(text=prompt, embedding=vector), experts).details["lambda"] == 1.0
    assert strategy.route(Query(text=prompt, embedding=vector, cost_weight=0.0), experts).details["lambda"] == 0.0
    clamped = strategy.route(Query(text=prompt, embedding=vector, cost_weight=7.0), experts)
    assert clamped.details["lambda"] == 1.0


def test_lambda_monotone_with_card_prices_only():
    """A table without costs: λ trades quality against the experts' configured prices."""
    from tests.unit.test_strategies import make_table

    strategy = fitted("cost_aware", make_table(costs=False))
    experts = make_experts()
    prices = {e.id: e.input_cost_per_mtok for e in experts}
    prompts = held_out("history", 10) + held_out("math", 10)
    spent = [
        sum(prices[strategy.route(Query(text=p, cost_weight=w), experts).primary] for p in prompts) for w in LAMBDAS
    ]
    assert all(b <= a for a, b in zip(spent, spent[1:])), spent
