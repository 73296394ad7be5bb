"""Contracts every registered strategy keeps (parametrized over `known_strategies()`)."""

from __future__ import annotations

import pytest

from router_service.domain import ExpertCard, Query
from router_service.errors import NotFittedError
from router_service.routing.artifact import load_artifact, save_artifact
from router_service.routing.embedding import HashingEmbedder
from router_service.routing.strategies.base import RoutingStrategy, get_strategy, known_strategies, strategy_class
from tests.unit.test_strategies import held_out, make_experts, make_table

STRATEGIES = known_strategies()
PROMPTS = held_out("math", 6) + held_out("code", 6) + held_out("history", 6) + ["", "hello", "总结一下"]


@pytest.fixture(scope="module")
def table():
    return make_table()


def build(name: str, table, seed: int | None = None) -> RoutingStrategy:
    params = {"seed": seed} if seed is not None and "seed" in strategy_class(name).param_names() else {}
    strategy = get_strategy(name, **params).set_embedder(HashingEmbedder())
    returned = strategy.fit(table)
    assert returned is strategy
    return strategy


def decisions(strategy, prompts=PROMPTS, experts=None, **query):
    experts = experts or make_experts()
    return [(d.expert_ids, d.scores) for d in (strategy.route(Query(text=p, **query), experts) for p in prompts)]


@pytest.mark.parametrize("name", STRATEGIES)
def test_fit_returns_self_and_learned_attributes_end_with_underscore(name, table):
    fresh = get_strategy(name)
    before = set(vars(fresh))
    strategy = build(name, table)
    added = set(vars(strategy)) - before - {"embedder"}
    assert all(attr.endswith("_") or attr.startswith("_") for attr in added), added
    assert set(fresh.get_params()) == set(type(fresh).param_names())  # __init__ stores params only


@pytest.mark.parametrize("name", [n for n in STRATEGIES if strategy_class(n).learned])
def test_unfitted_learned_strategy_raises(name):
    strategy = get_strategy(name).set_embedder(HashingEmbedder())
    assert strategy.fitted_experts is None
    with pytest.raises(NotFittedError):
        strategy.route(Query(text="x"), make_experts())
    with pytest.raises(NotFittedError):
        strategy.route_batch([Query(text="x")], make_experts())


@pytest.mark.parametrize("name", STRATEGIES)
def test_only_configured_expert_ids_come_back(name, table):
    strategy = build(name, table)
    configured = make_experts(["general", "code-x"]) + [ExpertCard(id="stranger")]
    ids = {e.id for e in configured}
    for k in (1, 2, 5):
        for prompt in PROMPTS:
            decision = strategy.route(Query(text=prompt, top_k=k), configured)
            assert decision.expert_ids and set(decision.expert_ids) <= ids
            assert len(decision.expert_ids) == len(set(decision.expert_ids)) <= k
            assert set(decision.scores) <= ids
            assert decision.strategy == strategy.name
            decision.to_dict()  # JSON-ready


@pytest.mark.parametrize("name", STRATEGIES)
def test_same_seed_same_decisions(name, table):
    a, b = build(name, table, seed=7), build(name, table, seed=7)
    assert decisions(a) == decisions(b)
    assert decisions(a) == decisions(a)  # and routing has no hidden state


@pytest.mark.parametrize("name", STRATEGIES)
def test_route_batch_matches_route(name, table):
    strategy = build(name, table)
    experts = make_experts()
    batch = strategy.route_batch([Query(text=p) for p in PROMPTS], experts)
    assert [(d.expert_ids, d.scores) for d in batch] == decisions(strategy, experts=experts)


@pytest.mark.parametrize("name", STRATEGIES)
def test_save_load_gives_identical_decisions(name, table, tmp_path):
    strategy = build(name, table)
    path = save_artifact(strategy, tmp_path / f"{name}.joblib")
    loaded = load_artifact(path)  # embedder made from the recorded name when the strategy needs one
    assert type(loaded) is type(strategy)
    assert loaded.fitted_experts == strategy.fitted_experts
    for weight in (None, 0.0, 0.5, 1.0):
        assert decisions(loaded, cost_weight=weight) == decisions(strategy, cost_weight=weight)
    assert strategy.embedder is not None or not strategy.needs_embedding  # saving left the original intact


@pytest.mark.parametrize("name", [n for n in STRATEGIES if strategy_class(n).learned])
def test_removed_expert_falls_back_to_next_best(name, table):
    strategy = build(name, table)
    full = make_experts()
    for prompt in PROMPTS:
        first = strategy.route(Query(text=prompt), full)
        removed = first.primary
        rest = [e for e in full if e.id != removed]
        decision = strategy.route(Query(text=prompt), rest)
        ranked = sorted(first.scores, key=lambda i: -first.scores[i])
        assert decision.primary != removed
        assert decision.primary in ranked[1:3]  # the runner-up (ties may swap by cost)
        if first.scores[removed] > decision.scores[decision.primary]:  # not a tie: the fallback is reported
            assert decision.fallback and decision.fallback[0]["wanted"] == removed


@pytest.mark.parametrize("name", STRATEGIES)
def test_precomputed_embedding_is_used(name, table):
    strategy = build(name, table)
    prompt = PROMPTS[0]
    vector = HashingEmbedder().encode([prompt])[0]
    assert decisions(strategy, [prompt]) == [
        (d.expert_ids, d.scores) for d in [strategy.route(Query(text=prompt, embedding=vector), make_experts())]
    ]


def test_registry_covers_the_issue_strategies():
    assert {"random", "best_single", "category", "skill", "cost_aware"} <= set(STRATEGIES)
    assert strategy_class("cost_aware").has_tradeoff
    assert {n for n in STRATEGIES if strategy_class(n).learned} >= {"best_single", "category", "skill", "cost_aware"}
