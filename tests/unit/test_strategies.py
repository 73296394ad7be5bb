"""Behaviour of each learned/baseline strategy on a small synthetic table (HashingEmbedder, no network).

`make_table` / `make_experts` are imported by the other strategy test files.
"""

from __future__ import annotations

import numpy as np
import pytest

from router_service.data.table import RoutingTable
from router_service.domain import ExpertCard, Query
from router_service.errors import CoEError, NotFittedError, UnknownParameterError
from router_service.routing.embedding import HashingEmbedder
from router_service.routing.strategies.base import get_strategy
from router_service.routing.strategies.baselines import BestSingleStrategy, RandomStrategy
from router_service.routing.strategies.category import CategoryStrategy, choose_k
from router_service.routing.strategies.cost_aware import CostAwareStrategy
from router_service.routing.strategies.skill import EmbeddingSkillAnnotator, LLMSkillAnnotator, SkillStrategy

MODELS = ["math-x", "code-x", "general", "premium"]
PRICES = {"math-x": 1.0, "code-x": 1.0, "general": 2.0, "premium": 10.0}
TOPICS = {
    "math": "compute sum numbers add multiply equation solve integer fraction divide total",
    "code": "write python function returns list string loop def class array sort",
    "history": "which empire king war century treaty revolution ancient dynasty battle",
}
# P(correct) per topic and model: each specialist wins its topic, premium is good but expensive.
ACCURACY = {"math": [0.95, 0.1, 0.5, 0.8], "code": [0.1, 0.95, 0.5, 0.8], "history": [0.2, 0.2, 0.85, 0.8]}


def topic_prompt(topic: str, rng: np.random.Generator, i: int) -> str:
    return " ".join(rng.choice(TOPICS[topic].split(), 7).tolist()) + f" q{i}"


def make_table(n: int = 150, seed: int = 0, categories: bool = True, costs: bool = True) -> RoutingTable:
    rng = np.random.default_rng(seed)
    prompts, labels, scores = [], [], []
    for i in range(n):
        topic = list(TOPICS)[i % len(TOPICS)]
        prompts.append(topic_prompt(topic, rng, i))
        labels.append(topic)
        scores.append((rng.random(len(MODELS)) < ACCURACY[topic]).astype(float))
    cost = np.tile([PRICES[m] / 1000 for m in MODELS], (n, 1)) * rng.uniform(0.8, 1.2, (n, 1))
    return RoutingTable(
        prompts=prompts,
        models=list(MODELS),
        scores=np.array(scores),
        costs=cost if costs else None,
        categories=labels if categories else None,
    )


def make_experts(ids=MODELS, priced: bool = True) -> list[ExpertCard]:
    return [ExpertCard(id=m, input_cost_per_mtok=PRICES.get(m, 1.0) if priced else 0.0) for m in ids]


def fitted(name: str, table: RoutingTable | None = None, **params):
    strategy = get_strategy(name, **params).set_embedder(HashingEmbedder())
    return strategy.fit(table if table is not None else make_table())


def held_out(topic: str, n: int = 20) -> list[str]:
    rng = np.random.default_rng(99)
    return [topic_prompt(topic, rng, 1000 + i) for i in range(n)]


def majority(strategy, prompts, experts=None, **query) -> str:
    picks = [strategy.route(Query(text=p, **query), experts or make_experts()).primary for p in prompts]
    return max(set(picks), key=picks.count)


# -- baselines ------------------------------------------------------------------------------------
def test_random_depends_only_on_seed_and_text():
    experts = make_experts()
    a, b, c = RandomStrategy(seed=1), RandomStrategy(seed=1), RandomStrategy(seed=2)
    prompts = [f"prompt {i}" for i in range(40)]
    picks_a = [a.route(Query(text=p), experts).primary for p in prompts]
    assert picks_a == [b.route(Query(text=p), experts).primary for p in prompts]
    assert picks_a != [c.route(Query(text=p), experts).primary for p in prompts]
    assert len(set(picks_a)) > 1  # it does spread


def test_best_single_picks_best_mean_and_breaks_ties_by_cost():
    table = make_table()
    strategy = BestSingleStrategy().fit(table)
    assert strategy.best_ == table.models[int(np.argmax(table.score_matrix().mean(axis=0)))]
    tied = RoutingTable(
        prompts=["a", "b"],
        models=["dear", "cheap"],
        scores=np.array([[1, 1], [0, 0]]),
        costs=np.array([[5.0, 1.0], [5.0, 1.0]]),
    )
    strategy = BestSingleStrategy().fit(tied)
    assert strategy.best_ == "cheap"
    assert strategy.route(Query(text="x"), [ExpertCard(id="dear"), ExpertCard(id="cheap")]).primary == "cheap"


def test_best_single_missing_is_not_skipped():
    table = RoutingTable(prompts=["a", "b"], models=["m1", "m2"], scores=np.array([[0.5, np.nan], [0.5, 0.9]]))
    assert BestSingleStrategy().fit(table).best_ == "m1"  # m2 = 0.45 with missing = 0, not 0.9


# -- category -------------------------------------------------------------------------------------
def test_category_learns_map_and_routes_specialists():
    strategy = fitted("category")
    assert strategy.learned_map_["math"] == "math-x"
    assert strategy.learned_map_["code"] == "code-x"
    assert majority(strategy, held_out("math")) == "math-x"
    assert majority(strategy, held_out("code")) == "code-x"
    details = strategy.route(Query(text=held_out("code")[0]), make_experts()).details
    assert set(details) == {"category", "confidence", "mapped_expert", "generalist_fallback"}
    assert details["category"] == "code" and details["generalist_fallback"] is False


def test_category_config_map_overrides_learned_map():
    strategy = fitted("category", category_map={"math": "general"})
    assert majority(strategy, held_out("math")) == "general"
    strategy.set_params(category_map={})  # config change without refit
    assert majority(strategy, held_out("math")) == "math-x"


def test_category_low_confidence_goes_to_generalist():
    strategy = fitted("category", confidence_threshold=1.0, default_expert="general")
    decision = strategy.route(Query(text=held_out("math")[0]), make_experts())
    assert decision.primary == "general"
    assert decision.details["generalist_fallback"] is True
    strategy.set_params(default_expert=None)  # no configured generalist → best overall model
    assert strategy.route(Query(text=held_out("math")[0]), make_experts()).primary == strategy.generalist_


def test_category_scores_give_next_best_fallback():
    strategy = fitted("category")
    decision = strategy.route(Query(text=held_out("math")[0]), make_experts([m for m in MODELS if m != "math-x"]))
    assert decision.primary == "premium"  # the next best on math
    assert decision.fallback and decision.fallback[0]["wanted"] == "math-x"


def test_category_clusters_a_table_without_categories():
    table = make_table(n=180, categories=False)
    strategy = fitted("category", table)
    assert strategy.clustered_ and 2 <= len(strategy.categories_) <= 9
    assert all(c.startswith("cluster-") for c in strategy.categories_)
    assert strategy.route(Query(text="anything"), make_experts()).details["category"].startswith("cluster-")


def test_choose_k_rule_small_tables_get_one_cluster():
    x = np.random.default_rng(0).normal(size=(30, 8))
    assert choose_k(x, 12, 0) == 1  # fewer than 40 prompts: no split


# -- skill ----------------------------------------------------------------------------------------
def test_skill_annotates_two_to_five_and_profiles_plus_minus_one():
    table = make_table()
    strategy = fitted("skill", table)
    decision = strategy.route(Query(text=held_out("math")[0]), make_experts())
    assert 2 <= len(decision.details["skills"]) <= 5
    # Profile: per (model, skill) the prompts right and seen, so the ±1 profile right − wrong = 2·right − seen
    # is bounded by the number of prompts with that skill.
    assert np.all((strategy.right_ >= 0) & (strategy.right_ <= strategy.seen_))
    assert np.array_equal(strategy.seen_, np.round(strategy.seen_)) and strategy.seen_.sum() > 0
    assert np.all(np.abs(2 * strategy.right_ - strategy.seen_) <= strategy.seen_)


def test_skill_routes_specialists_deterministically():
    # A vocabulary the hashing embedder can match (it only sees shared character n-grams).
    vocabulary = [
        "add numbers sum",
        "multiply divide fraction",
        "python function def",
        "list string array",
        "empire king dynasty",
        "war battle treaty",
    ]
    strategy = fitted("skill", annotator=EmbeddingSkillAnnotator(vocabulary, min_similarity=0.3))
    picks = [strategy.route(Query(text=p), make_experts()).primary for p in held_out("code")]
    assert picks == [strategy.route(Query(text=p), make_experts()).primary for p in held_out("code")]
    assert majority(strategy, held_out("code")) == "code-x"
    assert majority(strategy, held_out("math")) == "math-x"


def test_skill_annotator_respects_bounds():
    annotator = EmbeddingSkillAnnotator(min_similarity=-1.0).fit(HashingEmbedder())
    assert len(annotator.annotate("x", HashingEmbedder().encode(["add numbers"])[0])) == 5
    annotator = EmbeddingSkillAnnotator(min_similarity=1.1).fit(HashingEmbedder())
    assert len(annotator.annotate("x", HashingEmbedder().encode(["add numbers"])[0])) == 2


def test_llm_annotator_plugs_in():
    calls = []

    def complete(prompt: str) -> str:
        calls.append(prompt)
        topic = "arithmetic" if "sum" in prompt.split("Question:")[1] else "python programming"
        return f"{topic}, problem solving"

    strategy = fitted("skill", annotator=LLMSkillAnnotator(complete))
    assert set(strategy.keywords_) == {"arithmetic", "python programming", "problem solving"}
    decision = strategy.route(Query(text="compute the sum of two numbers"), make_experts())
    assert decision.details["skills"] == ["arithmetic", "problem solving"]
    assert LLMSkillAnnotator.parse("1. Algebra\n- geometry; Python.") == ["algebra", "geometry", "python"]


def test_skill_sampling_is_seeded():
    a = fitted("skill", temperature=0.05, seed=3)
    b = fitted("skill", temperature=0.05, seed=3)
    prompts = held_out("history")
    assert [a.route(Query(text=p), make_experts()).primary for p in prompts] == [
        b.route(Query(text=p), make_experts()).primary for p in prompts
    ]


# -- cost_aware -----------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["knn", "linear", "auto"])
def test_cost_aware_estimators_route_by_quality_at_zero_lambda(estimator):
    strategy = fitted("cost_aware", estimator=estimator)
    assert strategy.quality_model_["kind"] in ("knn", "linear")
    if estimator != "auto":
        assert strategy.quality_model_["kind"] == estimator
    assert majority(strategy, held_out("math"), cost_weight=0.0) in ("math-x", "premium")
    assert majority(strategy, held_out("code"), cost_weight=0.0) in ("code-x", "premium")


def test_cost_aware_lambda_one_picks_cheapest_and_explains():
    strategy = fitted("cost_aware")
    decision = strategy.route(Query(text=held_out("history")[0], cost_weight=1.0), make_experts())
    assert decision.primary in ("math-x", "code-x")
    assert decision.details["lambda"] == 1.0
    assert set(decision.details["quality"]) == set(MODELS) == set(decision.details["cost"])
    assert strategy.set_params(cost_weight=1.0).route(Query(text="x"), make_experts()).details["lambda"] == 1.0


def test_cost_aware_without_table_costs_uses_card_prices():
    strategy = fitted("cost_aware", make_table(costs=False))
    assert strategy.cost_model_ is None
    cheap = strategy.route(Query(text=held_out("history")[0], cost_weight=1.0), make_experts())
    assert cheap.primary in ("math-x", "code-x")
    assert cheap.details["cost"]["premium"] == 1.0
    free = strategy.route(Query(text=held_out("history")[0], cost_weight=0.9), make_experts(priced=False))
    assert set(free.details["cost"].values()) == {0.0}


def test_cost_aware_bad_estimator():
    with pytest.raises(ValueError, match="estimator"):
        fitted("cost_aware", estimator="forest")


def test_mlp_head_is_chosen_by_cv_and_routes_by_quality_then_cost():
    strategy = fitted("mlp", hidden_grid=((16,), (32,)), mlp_alpha_grid=(1e-3, 1e-1), max_iter=300)
    head = strategy.quality_model_
    assert head["kind"] == "mlp" and head["cv_mse"] is not None  # the grid was searched by CV
    assert (tuple(head["hidden"]), head["alpha"]) in {(h, a) for h in ((16,), (32,)) for a in (1e-3, 1e-1)}
    assert head["weights"][0].shape[1] == head["hidden"][0] and head["weights"][-1].shape == (head["hidden"][0], 4)
    assert majority(strategy, held_out("math"), cost_weight=0.0) in ("math-x", "premium")
    assert majority(strategy, held_out("code"), cost_weight=0.0) in ("code-x", "premium")
    cheap = strategy.route(Query(text=held_out("history")[0], cost_weight=1.0), make_experts())
    assert cheap.primary in ("math-x", "code-x")


# -- shared contracts -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["best_single", "category", "skill", "cost_aware", "mlp", "mf", "stack"])
def test_unknown_added_expert_is_never_chosen(name):
    strategy = fitted(name)
    experts = make_experts() + [ExpertCard(id="newcomer", input_cost_per_mtok=0.0, generalist=True)]
    for prompt in held_out("math", 5) + held_out("history", 5):
        decision = strategy.route(Query(text=prompt, cost_weight=1.0), experts)
        assert "newcomer" not in decision.expert_ids
    # ... except as the last resort when no fitted expert is configured at all.
    only_new = strategy.route(Query(text="x"), [ExpertCard(id="newcomer")])
    assert only_new.expert_ids == ["newcomer"] and only_new.fallback


@pytest.mark.parametrize("name", ["category", "skill", "cost_aware", "best_single"])
def test_unfitted_raises(name):
    strategy = get_strategy(name).set_embedder(HashingEmbedder())
    with pytest.raises(NotFittedError):
        strategy.route(Query(text="x"), make_experts())
    with pytest.raises(NotFittedError):
        strategy.score_experts(Query(text="x", embedding=np.zeros(256)), make_experts())


def test_top_k_returns_distinct_experts():
    strategy = fitted("cost_aware", top_k=3)
    decision = strategy.route(Query(text=held_out("math")[0]), make_experts())
    assert len(decision.expert_ids) == 3 == len(set(decision.expert_ids))
    assert len(strategy.route(Query(text="x", top_k=2), make_experts()).expert_ids) == 2


def test_set_params_rejects_unknown_names():
    with pytest.raises(UnknownParameterError) as info:
        CategoryStrategy().set_params(cost_weight=0.3)
    assert info.value.names == ["cost_weight"] and not isinstance(info.value, CoEError)  # a domain error
    assert CostAwareStrategy().set_params(cost_weight=0.3).cost_weight == 0.3
    assert "annotator" in SkillStrategy.param_names()


def test_routing_errors_are_domain_errors_mapped_to_400_in_one_place():
    """Strategies raise domain errors (no HTTP status); `to_error_response` maps them to the 400 the API
    always gave: the same status, type, param and code as before the strategies stopped raising HTTP errors."""
    import importlib

    from router_service.errors import RoutingError, UnknownStrategyError, to_error_response
    from router_service.routing.strategies.base import _REGISTRY, strategy_class

    with pytest.raises(UnknownStrategyError) as unknown_strategy:
        strategy_class("magic")
    with pytest.raises(UnknownParameterError) as unknown_param:
        CostAwareStrategy().set_params(colour="red")
    for exc, param, code in (
        (unknown_strategy.value, "routing.strategy", "unknown_strategy"),
        (unknown_param.value, "router.params", "unknown_parameter"),
    ):
        assert isinstance(exc, RoutingError) and not isinstance(exc, CoEError) and not hasattr(exc, "status_code")
        status, body, headers = to_error_response(exc)
        assert status == 400 and headers == {}
        assert (body.error.type, body.error.param, body.error.code) == ("invalid_request_error", param, code)
        assert body.error.message == exc.message
    # No strategy module even imports a client (4xx) HTTP error.
    for target in {*_REGISTRY.values(), "router_service.routing.strategies.base:RoutingStrategy"}:
        module = importlib.import_module(target.split(":")[0])
        http = [
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, CoEError) and value.status_code < 500
        ]
        assert not http, f"{module.__name__} imports HTTP errors {http}"


def test_bug6_readme_and_docstring_say_which_skill_defaults_were_tuned_on_model7():
    """skill's strength_power and min_similarity defaults were chosen on the model7 tables. The README
    used to say no router was tuned to these files; now it, the README's "What was tuned on what" table
    and the strategy's docstring name that source, for the values the code actually has."""
    import inspect
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "The routers were not tuned to these files" not in readme
    assert "What was tuned to these files: two of `skill`'s defaults were chosen on `model7/`" in readme
    defaults = SkillStrategy().get_params()
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:4]]
        for line in readme.splitlines()
        if line.startswith("| `skill` ")
    }
    doc = inspect.getdoc(SkillStrategy)
    for param in ("strength_power", "min_similarity"):
        value, source = rows[f"`skill` {param}"]
        assert float(value) == defaults[param] and "model7" in source
        assert f"{param} = {defaults[param]}" in doc
    assert "model7" in doc.split("Defaults, and the data they were chosen on")[1]
