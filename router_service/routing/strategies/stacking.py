"""Stacking router: a ridge meta-model over the per-expert quality that other strategies predict.

Bases (`bases`, default category, cost_aware, mf, skill) each give one number per expert for a prompt:
* category: the expected quality under the classifier's category probabilities, Σ_c p(c|x)·q̄(c, m);
* cost_aware, mf, mlp: their predicted quality;
* skill: the skill-weighted win rate it routes by.

The meta-model is a multi-output ridge regression from all of them (bases × experts features) to each
expert's quality, fitted on *out-of-fold* base predictions: for each of `cv` folds of the training table
the bases are refitted on the other folds and predict this one, so the meta-model learns how far to
trust each base on prompts it did not see. Its L2 strength is chosen by CV over `meta_alpha_grid` on
those same out-of-fold features; then the bases are refitted on the whole table.

Every hyperparameter is chosen on the training table only: each base first searches its own grid by
its own CV on the whole table (as when it is fitted alone), and the out-of-fold refits reuse what it
chose (`pinned_params`), which keeps a stack fit to about `cv` + 1 base fits instead of `cv` times
each base's search.

The choice is CARROT's, argmax (1 − λ)·quality − λ·cost, with cost_aware's cost head. A decision uses
only its own prompt (every base does), so batches never change it.

Learned attributes: bases_ (the fitted base strategies, embedder removed when saved), quality_model_
{"kind": "stack", "coef" (bases·experts × experts), "intercept", "alpha", "cv_mse", "base_cv_mse"
(each base's own out-of-fold error, for comparison)}, cost_model_, cost_scale_, models_.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from router_service.domain import Query
from router_service.routing.strategies.base import RoutingStrategy, get_strategy
from router_service.routing.strategies.category import CategoryStrategy
from router_service.routing.strategies.cost_aware import CostAwareStrategy, _ridge_cv_errors, _Target
from router_service.routing.strategies.skill import SkillStrategy

if TYPE_CHECKING:
    from router_service.data.table import RoutingTable
    from router_service.routing.embedding import Embedder

STACKABLE = ("category", "cost_aware", "mf", "mlp", "skill")


def pinned_params(strategy: RoutingStrategy) -> dict[str, Any]:
    """Constructor parameters that refit `strategy` with the hyperparameters its own CV chose, no search."""
    model = getattr(strategy, "quality_model_", None)
    if model is None:  # category and skill search nothing
        return {}
    kind = model["kind"]
    if kind == "knn":
        return {"estimator": "knn", "k": model["k"], "cv": 0}
    if kind == "linear":
        return {"estimator": "linear", "alpha_grid": (model["alpha"],), "cv": 0}
    if kind == "mf":
        return {"rank_grid": (model["rank"],), "l2_grid": (model["l2"],), "cv": 0}
    if kind == "mlp":
        return {"hidden_grid": (tuple(model["hidden"]),), "mlp_alpha_grid": (model["alpha"],), "cv": 0}
    raise ValueError(f"cannot pin a quality model of kind {kind!r}")


def base_quality(strategy: RoutingStrategy, query: Query) -> np.ndarray:
    """What one fitted base predicts for each of its `models_` on this prompt (embedding set)."""
    if isinstance(strategy, CategoryStrategy):
        return strategy.predict_proba(query.embedding) @ strategy.category_scores_
    if isinstance(strategy, CostAwareStrategy):
        return strategy.predict(query, ())[0]
    if isinstance(strategy, SkillStrategy):
        scores, _ = strategy.score_and_explain(query, ())
        return np.array([scores[m] for m in strategy.models_], dtype=np.float64)
    raise TypeError(f"strategy '{strategy.name}' cannot be stacked; stackable: {', '.join(STACKABLE)}")


class StackingStrategy(CostAwareStrategy):
    """Stacking router. Parameters:

    cost_weight: default λ in [0, 1] when a request gives none.
    bases: names of the stacked strategies (a subset of STACKABLE).
    base_params: {base name: constructor parameters} for the bases.
    meta_alpha_grid: L2 strengths searched for the meta-model.
    cv: folds for the out-of-fold features and every search (≥ 2). seed: folds. top_k: experts per request.
    """

    name = "stack"

    def __init__(
        self,
        *,
        cost_weight: float = 0.0,
        bases: Sequence[str] = ("category", "cost_aware", "mf", "skill"),
        base_params: Mapping[str, Mapping[str, Any]] | None = None,
        meta_alpha_grid: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
        cv: int = 5,
        seed: int = 0,
        top_k: int = 1,
    ) -> None:
        super().__init__(cost_weight=cost_weight, cv=cv, seed=seed, top_k=top_k)
        self.bases = bases
        self.base_params = base_params
        self.meta_alpha_grid = meta_alpha_grid

    # -- embedder: the bases share the stack's (skill embeds its keywords) ---------------------
    def set_embedder(self, embedder: Embedder | None) -> StackingStrategy:
        self.embedder = embedder
        for base in getattr(self, "bases_", []):
            base.set_embedder(embedder)
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if "bases_" in state:  # a live embedder is a model, never part of a saved artifact
            state["bases_"] = [copy.copy(b).set_embedder(None) for b in state["bases_"]]
        return state

    # -- learning -----------------------------------------------------------------------------
    def _new_base(self, name: str, extra: Mapping[str, Any] | None = None) -> RoutingStrategy:
        params = {"seed": self.seed, **(self.base_params or {}).get(name, {}), **(extra or {})}
        return get_strategy(name, **params).set_embedder(self.embedder)

    def _features(self, bases: Sequence[RoutingStrategy], prompts: Sequence[str], x: np.ndarray) -> np.ndarray:
        """(prompts, bases, experts) base predictions, one prompt at a time."""
        return np.stack(
            [np.stack([base_quality(b, Query(text=p, embedding=e)) for b in bases]) for p, e in zip(prompts, x)]
        )

    def _fit_table_quality(self, table: RoutingTable, x: np.ndarray, folds: list) -> dict[str, Any]:
        unknown = [b for b in self.bases if b not in STACKABLE]
        if unknown or not self.bases:
            raise ValueError(f"stack bases must be a non-empty subset of {STACKABLE}; got {list(self.bases)}")
        if not folds:
            raise ValueError(f"stack needs cv ≥ 2 and at least {2 * max(self.cv, 2)} prompts to stack out-of-fold")
        from sklearn.linear_model import Ridge

        full = [self._new_base(name).fit(table, embeddings=x) for name in self.bases]
        n, m = len(table), len(table.models)
        oof = np.zeros((n, len(full), m))
        for train, val in folds:
            part = table.subset(train)
            fold_bases = [self._new_base(b.name, pinned_params(b)).fit(part, embeddings=x[train]) for b in full]
            oof[val] = self._features(fold_bases, [table.prompts[i] for i in val], x[val])
        t = _Target(table.scores)
        features = oof.reshape(n, -1)
        errors = _ridge_cv_errors(features, t, folds, self.meta_alpha_grid)
        alpha = min(errors, key=errors.__getitem__)
        meta = Ridge(alpha=alpha).fit(features, t.filled)
        observed = max(float(t.mask.sum()), 1.0)
        base_cv_mse = {
            b.name: float((((np.clip(oof[:, j], 0, 1) - t.filled) ** 2) * t.mask).sum() / observed)
            for j, b in enumerate(full)
        }
        self.bases_ = full
        return {
            "kind": "stack",
            "coef": np.asarray(meta.coef_.T, dtype=np.float64),
            "intercept": np.asarray(meta.intercept_, dtype=np.float64),
            "alpha": float(alpha),
            "cv_mse": errors[alpha],
            "base_cv_mse": base_cv_mse,
        }

    # -- prediction ---------------------------------------------------------------------------
    def _predict_quality(self, query: Query, e: np.ndarray, neighbours) -> np.ndarray:
        if self.quality_model_["kind"] != "stack":
            return super()._predict_quality(query, e, neighbours)
        features = self._features(self.bases_, [query.text], e[None, :]).reshape(-1)
        return features @ self.quality_model_["coef"] + self.quality_model_["intercept"]
