"""Composition of Experts (SambaNova CoE): classify the prompt's category, then send it to that
category's expert.

Step 1, a multinomial logistic regression on the prompt embedding predicts the category. A table
without category labels is clustered first (KMeans) and the clusters become the categories.
Step 2, a `category → expert` map: the configured `category_map` wins, else the expert with the best
mean training score in that category (ties → cheaper). When the classifier's top probability is below
`confidence_threshold`, the prompt goes to the generalist (`default_expert`, else the best model
overall): a wrong category is worse than no category.

Choosing k for clustering (when `n_clusters` is None): the k in 2..min(max_clusters, n // 20) with the
highest silhouette score (cosine geometry; at most 2,000 sampled points), so every cluster has on
average ≥ 20 prompts to estimate per-expert quality from; fewer than 40 prompts → one cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from router_service.domain import ExpertCard, Query
from router_service.routing.strategies.base import RoutingStrategy
from router_service.routing.strategies.baselines import best_single_ranking, mean_quality, one_thread, tiebroken_scores

if TYPE_CHECKING:
    from router_service.data.table import RoutingTable

# The mapped expert scores 1.0; the others get their quality squeezed below it, so the ranking past
# the first (the next-best fallback when the mapped expert is absent) follows quality.
_OTHERS_SCALE = 0.99
_MIN_PER_CLUSTER = 20


def choose_k(x: np.ndarray, max_clusters: int, seed: int) -> int:
    """Silhouette-best k in 2..min(max_clusters, n // 20); 1 when the table is too small to split."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    upper = min(max_clusters, len(x) // _MIN_PER_CLUSTER)
    if upper < 2:
        return 1
    best_k, best = 2, -np.inf
    for k in range(2, upper + 1):
        labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
        if len(set(labels)) < 2:
            continue
        score = silhouette_score(x, labels, metric="cosine", sample_size=min(len(x), 2000), random_state=seed)
        if score > best:
            best_k, best = k, score
    return best_k


class CategoryStrategy(RoutingStrategy):
    """Two-step CoE router. Parameters (all optional):

    category_map: {category: expert id} overriding the learned map (config `router.category_map`).
    default_expert: generalist for low-confidence prompts; None → the best model on the whole table.
    confidence_threshold: minimum top class probability to trust the category (config default 0.5).
    n_clusters: k for tables without categories; None → silhouette rule (module docstring).
    max_clusters: upper bound of that search. C: inverse L2 strength of the classifier.
    seed: KMeans seed. top_k: experts per request.
    """

    name = "category"
    learned = True
    needs_embedding = True

    def __init__(
        self,
        *,
        category_map: Mapping[str, str] | None = None,
        default_expert: str | None = None,
        confidence_threshold: float = 0.5,
        n_clusters: int | None = None,
        max_clusters: int = 12,
        C: float = 1.0,
        seed: int = 0,
        top_k: int = 1,
    ) -> None:
        super().__init__(top_k=top_k)
        self.category_map = category_map
        self.default_expert = default_expert
        self.confidence_threshold = confidence_threshold
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.C = C
        self.seed = seed

    # -- learning -----------------------------------------------------------------------------
    def _labels(self, table: RoutingTable, x: np.ndarray) -> list[str]:
        if table.categories is not None:
            self.clustered_ = False
            return [str(c) for c in table.categories]
        from sklearn.cluster import KMeans

        k = self.n_clusters or choose_k(x, self.max_clusters, self.seed)
        k = max(1, min(k, len(x)))
        self.clustered_ = True
        if k == 1:
            return ["cluster-0"] * len(x)
        labels = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit_predict(x)
        return [f"cluster-{i}" for i in labels]

    def fit(self, table: RoutingTable, embeddings: np.ndarray | None = None) -> CategoryStrategy:
        if len(table) == 0:
            raise ValueError("cannot fit on an empty table")
        x = self._table_embeddings(table, embeddings)
        with one_thread():
            return self._fit(table, x)

    def _fit(self, table: RoutingTable, x: np.ndarray) -> CategoryStrategy:
        labels = np.array(self._labels(table, x))
        classes = sorted(set(labels.tolist()))
        if len(classes) > 1:
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression(C=self.C, max_iter=2000).fit(x, labels)
            coef, intercept = clf.coef_, clf.intercept_
            if len(classes) == 2:  # sklearn stores one row for binary problems: logits [0, z]
                coef = np.vstack([np.zeros_like(coef), coef])
                intercept = np.concatenate([[0.0], intercept])
            classes = [str(c) for c in clf.classes_]
        else:
            coef, intercept = np.zeros((1, x.shape[1])), np.zeros(1)
        # Kept as plain arrays: a numpy softmax per prompt costs microseconds, sklearn's predict_proba ~100 µs.
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = np.asarray(intercept, dtype=np.float64)
        self.categories_ = classes

        # Per category, and overall for the generalist: the best-single rule (missing = 0, ties → cheaper).
        self.learned_map_: dict[str, str] = {}
        order_rows = []
        for cat in classes:
            part = table.subset(np.flatnonzero(labels == cat))
            order = best_single_ranking(part)
            order_rows.append(tiebroken_scores(mean_quality(part), order))
            self.learned_map_[cat] = table.models[int(order[0])]
        self.category_scores_ = np.vstack(order_rows)  # quality with cost tie-breaks baked in
        overall_order = best_single_ranking(table)
        self.overall_scores_ = tiebroken_scores(mean_quality(table), overall_order)
        self.generalist_ = table.models[int(overall_order[0])]
        self.models_ = list(table.models)
        return self

    # -- routing ------------------------------------------------------------------------------
    def predict_proba(self, embedding: np.ndarray) -> np.ndarray:
        self.check_fitted()
        logits = self.coef_ @ np.asarray(embedding, dtype=np.float64) + self.intercept_
        logits -= logits.max()
        p = np.exp(logits)
        return p / p.sum()

    def _route_state(self, query: Query) -> tuple[dict[str, float], dict[str, Any]]:
        self.check_fitted()
        if query.embedding is None:
            query = self.with_embeddings([query])[0]
        proba = self.predict_proba(query.embedding)
        top = int(np.argmax(proba))
        category, confidence = self.categories_[top], float(proba[top])
        mapping = {**self.learned_map_, **(self.category_map or {})}
        fallback = confidence < self.confidence_threshold
        if fallback:
            target = self.default_expert or self.generalist_
            # Unsure of the category: order the rest by quality expected under the class probabilities.
            others = proba @ self.category_scores_
        else:
            target = mapping.get(category, self.default_expert or self.generalist_)
            others = self.category_scores_[top]
        scores = dict(zip(self.models_, (_OTHERS_SCALE * np.clip(others, 0.0, 1.0)).tolist()))
        scores[target] = 1.0  # a configured map/generalist may name an expert the table lacks
        details = {
            "category": category,
            "confidence": round(confidence, 4),
            "mapped_expert": target,
            "generalist_fallback": fallback,
        }
        return scores, details

    def score_experts(self, query: Query, experts: Sequence[ExpertCard]) -> Mapping[str, float]:
        return self._route_state(query)[0]

    def explain(self, query: Query, experts: Sequence[ExpertCard]) -> dict[str, Any]:
        return self._route_state(query)[1]

    def score_and_explain(
        self, query: Query, experts: Sequence[ExpertCard]
    ) -> tuple[Mapping[str, float], dict[str, Any]]:
        return self._route_state(query)
