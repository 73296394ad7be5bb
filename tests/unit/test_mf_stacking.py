"""The matrix-factorisation (`mf`) and stacking (`stack`) routers on the synthetic table of test_strategies.

Hand-checkable parts: MF's gradient against finite differences and its predictions against the
formula; stacking's out-of-fold features against bases refitted by hand on each fold; the meta-model
against a ridge fitted by hand on those features.
"""

from __future__ import annotations

import joblib
import numpy as np
import pytest

from router_service.domain import Query
from router_service.routing.artifact import load_artifact, save_artifact
from router_service.routing.embedding import HashingEmbedder, l2_normalise
from router_service.routing.strategies.base import get_strategy
from router_service.routing.strategies.cost_aware import _Target
from router_service.routing.strategies.mf import fit_mf, predict_mf
from router_service.routing.strategies.stacking import StackingStrategy, base_quality, pinned_params
from tests.unit.test_strategies import fitted, held_out, majority, make_experts, make_table


@pytest.fixture(scope="module")
def table():
    return make_table(300)


@pytest.fixture(scope="module")
def stack(table):
    return fitted("stack", table)


def _bce(params, x, t):
    p = np.clip(predict_mf(params, x), 1e-12, 1 - 1e-12)
    loss = -(t.filled * np.log(p) + (1 - t.filled) * np.log(1 - p))
    return float((loss * t.mask).sum() / t.mask.sum())


def test_mf_training_lowers_the_loss_it_says_it_minimises():
    """With no L2, Adam on the masked BCE must end far below where it started (the per-expert means),
    and a missing cell must not move it: the same table with one cell blanked fits the same."""
    tab = make_table(150)
    x = l2_normalise(HashingEmbedder().encode(tab.prompts))
    t = _Target(tab.scores)
    start = fit_mf(x, t, rank=8, l2=0.0, epochs=0, lr=0.05, seed=0)
    trained = fit_mf(x, t, rank=8, l2=0.0, epochs=200, lr=0.05, seed=0)
    assert _bce(trained, x, t) < 0.8 * _bce(start, x, t)
    # Start = each expert's mean quality (logit bias), as the docstring says.
    assert np.allclose(predict_mf(start, x).mean(axis=0), t.col_mean, atol=0.02)
    # Predictions are σ((x·A)·v + b), by hand.
    by_hand = 1 / (1 + np.exp(-((x @ trained["projection"]) @ trained["expert_vectors"].T + trained["bias"])))
    assert np.allclose(predict_mf(trained, x), by_hand)


def test_mf_gradient_matches_finite_differences():
    """One Adam step moves each parameter against the gradient's sign: check the analytic gradient
    through fit_mf's first step (Adam's first step is -lr·sign(g) for every non-zero g)."""
    tab = make_table(30)
    x = l2_normalise(HashingEmbedder(dim=16).encode(tab.prompts)).astype(np.float64)
    t = _Target(tab.scores)
    l2 = 0.01
    start = fit_mf(x, t, rank=3, l2=l2, epochs=0, lr=1e-3, seed=1)
    stepped = fit_mf(x, t, rank=3, l2=l2, epochs=1, lr=1e-3, seed=1)

    def loss(params):
        return _bce(params, x, t) + l2 * (np.sum(params["projection"] ** 2) + np.sum(params["expert_vectors"] ** 2))

    for key in ("projection", "expert_vectors", "bias"):
        numeric = np.zeros_like(start[key])
        for idx in np.ndindex(start[key].shape):
            plus = {k: v.copy() for k, v in start.items()}
            minus = {k: v.copy() for k, v in start.items()}
            plus[key][idx] += 1e-6
            minus[key][idx] -= 1e-6
            numeric[idx] = (loss(plus) - loss(minus)) / 2e-6
        moved = stepped[key] - start[key]
        big = np.abs(numeric) > 1e-6
        assert np.all(np.sign(moved[big]) == -np.sign(numeric[big])), key


def test_mf_searches_its_grid_by_cv_and_routes_each_topic_to_its_specialist(table):
    strategy = fitted("mf", table, rank_grid=(4, 16), l2_grid=(1e-4, 1e-2))
    model = strategy.quality_model_
    assert model["kind"] == "mf" and model["cv_mse"] is not None
    assert (model["rank"], model["l2"]) in {(r, a) for r in (4, 16) for a in (1e-4, 1e-2)}
    assert model["projection"].shape == (256, model["rank"]) and model["expert_vectors"].shape == (4, model["rank"])
    assert majority(strategy, held_out("math"), cost_weight=0.0) in ("math-x", "premium")
    assert majority(strategy, held_out("code"), cost_weight=0.0) in ("code-x", "premium")
    assert majority(strategy, held_out("history"), cost_weight=0.0) in ("general", "premium")
    cheap = strategy.route(Query(text=held_out("history")[0], cost_weight=1.0), make_experts())
    assert cheap.primary in ("math-x", "code-x")


def test_stack_meta_model_is_a_ridge_on_out_of_fold_base_predictions(table, stack):
    """Rebuild the stack by hand: fold bases refitted with the pinned hyperparameters, their predictions
    on the held-out fold, then a ridge with the chosen alpha. Coefficients must agree."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    x = l2_normalise(HashingEmbedder().encode(table.prompts))
    assert [b.name for b in stack.bases_] == ["category", "cost_aware", "mf", "skill"]
    oof = np.zeros((len(table), 4, 4))
    for train, val in KFold(5, shuffle=True, random_state=0).split(x):
        part = table.subset(train)
        bases = [get_strategy(b.name, seed=0, **pinned_params(b)).set_embedder(HashingEmbedder()) for b in stack.bases_]
        bases = [b.fit(part, embeddings=x[train]) for b in bases]
        for i in val:
            q = Query(text=table.prompts[i], embedding=x[i])
            oof[i] = np.stack([base_quality(b, q) for b in bases])
    meta = Ridge(alpha=stack.quality_model_["alpha"]).fit(oof.reshape(len(table), -1), _Target(table.scores).filled)
    assert np.allclose(stack.quality_model_["coef"], meta.coef_.T, atol=1e-6)
    assert stack.quality_model_["alpha"] in (0.1, 1.0, 10.0, 100.0)
    # The meta-model predicts better out of fold than any one base (the point of stacking).
    assert stack.quality_model_["cv_mse"] < min(stack.quality_model_["base_cv_mse"].values())


def test_stack_pins_what_each_base_chose(stack):
    pins = {b.name: pinned_params(b) for b in stack.bases_}
    assert pins["category"] == {} and pins["skill"] == {}
    assert pins["cost_aware"]["cv"] == 0 and pins["mf"]["cv"] == 0
    mf = next(b for b in stack.bases_ if b.name == "mf")
    assert pins["mf"]["rank_grid"] == (mf.quality_model_["rank"],)


def test_stack_routes_each_topic_to_its_specialist_and_trades_cost(stack):
    assert majority(stack, held_out("math"), cost_weight=0.0) == "math-x"
    assert majority(stack, held_out("code"), cost_weight=0.0) == "code-x"
    assert majority(stack, held_out("history"), cost_weight=0.0) in ("general", "premium")
    cheap = stack.route(Query(text=held_out("history")[0], cost_weight=1.0), make_experts())
    assert cheap.primary in ("math-x", "code-x")


def test_stack_decision_does_not_depend_on_the_batch(stack):
    prompts = held_out("math", 4) + held_out("history", 4)
    alone = [stack.route(Query(text=p), make_experts()).scores for p in prompts]
    batch = [d.scores for d in stack.route_batch([Query(text=p) for p in prompts], make_experts())]
    assert alone == batch


def test_stack_artifact_round_trip_drops_every_embedder(stack, tmp_path):
    path = save_artifact(stack, tmp_path / "stack.joblib")
    saved = joblib.load(path)["state"]
    assert saved.embedder is None and all(b.embedder is None for b in saved.bases_)
    assert all(b.embedder is not None for b in stack.bases_)  # the live object keeps them
    loaded = load_artifact(path)
    assert all(b.embedder is loaded.embedder for b in loaded.bases_)
    prompts = held_out("code", 5)
    assert [loaded.route(Query(text=p), make_experts()).scores for p in prompts] == [
        stack.route(Query(text=p), make_experts()).scores for p in prompts
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [({"bases": ("category", "random")}, "subset of"), ({"bases": ()}, "subset of"), ({"cv": 1}, "cv ≥ 2")],
)
def test_stack_refuses_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        get_strategy("stack", **params).set_embedder(HashingEmbedder()).fit(make_table(60))


def test_stack_base_params_reach_the_bases():
    strategy = StackingStrategy(bases=("category", "mf"), base_params={"mf": {"rank_grid": (2,), "l2_grid": (0.1,)}})
    strategy.set_embedder(HashingEmbedder()).fit(make_table(60))
    mf = strategy.bases_[1]
    assert (mf.quality_model_["rank"], mf.quality_model_["l2"]) == (2, 0.1)
