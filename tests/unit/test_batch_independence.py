"""A prompt's decision never depends on the other prompts in its batch (DESIGN §3; cross-batch
dependence in MoE routing is an attack surface). Property-tested over random batch compositions."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router_service.routing.embedding import HashingEmbedder
from router_service.routing.strategies.base import get_strategy, known_strategies
from router_service.domain import Query
from tests.unit.test_strategies import TOPICS, held_out, make_experts, make_table

_FITTED: dict[str, object] = {}
_EXPERTS = make_experts()
_VOCAB = sorted({w for text in TOPICS.values() for w in text.split()})

# Prompts near the training distribution (topic words) and far from it (arbitrary unicode text).
prompt_text = st.one_of(
    st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=10).map(" ".join),
    st.text(min_size=0, max_size=40),
    st.sampled_from(held_out("math", 3) + held_out("code", 3) + held_out("history", 3)),
)


def fitted(name: str):
    if name not in _FITTED:
        _FITTED[name] = get_strategy(name, top_k=2).set_embedder(HashingEmbedder()).fit(make_table())
    return _FITTED[name]


def key(decision):
    return decision.expert_ids, decision.scores, decision.fallback


@pytest.mark.parametrize("name", known_strategies())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=prompt_text, others=st.lists(prompt_text, max_size=8), position=st.integers(0, 8),
       weight=st.sampled_from([None, 0.0, 0.3, 1.0]))
def test_decision_is_the_same_alone_and_in_any_batch(name, target, others, position, weight):
    strategy = fitted(name)
    alone = strategy.route(Query(text=target, cost_weight=weight), _EXPERTS)
    batch = [Query(text=t, cost_weight=weight) for t in others]
    batch.insert(min(position, len(batch)), Query(text=target, cost_weight=weight))
    index = min(position, len(others))
    in_batch = strategy.route_batch(batch, _EXPERTS)[index]
    assert key(in_batch) == key(alone)
    # A different composition (reversed, with the target duplicated) changes nothing either.
    other_batch = list(reversed(batch)) + [Query(text=target, cost_weight=weight)]
    decisions = strategy.route_batch(other_batch, _EXPERTS)
    assert key(decisions[-1]) == key(alone)
    assert key(decisions[len(batch) - 1 - index]) == key(alone)


@pytest.mark.parametrize("name", ["random", "cost_aware", "skill", "category"])
def test_batch_results_do_not_depend_on_order(name):
    strategy = fitted(name)
    prompts = held_out("math", 4) + held_out("code", 4) + held_out("history", 4)
    forward = strategy.route_batch([Query(text=p) for p in prompts], _EXPERTS)
    backward = strategy.route_batch([Query(text=p) for p in reversed(prompts)], _EXPERTS)
    assert [key(d) for d in forward] == [key(d) for d in reversed(backward)]
