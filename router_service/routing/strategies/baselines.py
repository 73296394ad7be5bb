"""Reference routers every learned strategy must beat: a seeded random router and the best single model.

Also holds small helpers the learned strategies share (per-model quality/cost means, tie → cheaper).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from router_service.domain import ExpertCard, Query
from router_service.routing.strategies.base import RoutingStrategy

if TYPE_CHECKING:
    from router_service.data.table import RoutingTable

# Scores within this of each other count as tied, so float noise in means does not beat a cost difference.
TIE_TOL = 1e-9


def mean_quality(table: RoutingTable) -> np.ndarray:
    """Mean score per model; a missing score counts as 0 (a model that did not answer earned nothing)."""
    if len(table) == 0:
        return np.zeros(len(table.models))
    return table.score_matrix().mean(axis=0)


def mean_cost(table: RoutingTable) -> np.ndarray | None:
    """Mean observed cost per model (missing cells ignored), or None when the table has no costs."""
    if table.costs is None:
        return None
    costs = np.asarray(table.costs, dtype=np.float64)
    counts = np.sum(~np.isnan(costs), axis=0)
    sums = np.nansum(costs, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def rank_models(quality: np.ndarray, cost: np.ndarray | None = None) -> np.ndarray:
    """Model indices best first: higher quality, then (within TIE_TOL) lower cost, then table order."""
    q = np.round(np.asarray(quality, dtype=np.float64) / TIE_TOL) * TIE_TOL
    c = np.zeros_like(q) if cost is None else np.nan_to_num(np.asarray(cost, dtype=np.float64), nan=np.inf)
    return np.lexsort((np.arange(len(q)), c, -q))


def best_single_ranking(table: RoutingTable) -> np.ndarray:
    """Model indices best first by the best-single rule, the one `BestSingleStrategy` and the eval share.

    Mean score with a missing score counted as 0 (`mean_quality`); scores within TIE_TOL are tied and
    go to the lower mean *observed* cost (`mean_cost`: a missing cost is ignored, not counted as free;
    a model with no observed cost ranks after those with one); then table order. A table without
    costs ranks ties by table order.
    """
    return rank_models(mean_quality(table), mean_cost(table))


def best_single_index(table: RoutingTable) -> int:
    """Index of the best single model of `table` (see `best_single_ranking`)."""
    return int(best_single_ranking(table)[0])


def tiebroken_scores(quality: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Quality with a sub-TIE_TOL nudge so equal qualities keep `order` (the cheaper first) in any sort."""
    nudged = np.asarray(quality, dtype=np.float64).copy()
    position = np.empty(len(order), dtype=np.float64)
    position[order] = np.arange(len(order))
    return nudged - position * (TIE_TOL / (10 * max(len(order), 1)))


def one_thread():
    """Context limiting BLAS/OpenMP to one thread while fitting.

    Router fits are small (≤ 10^4 × 384); thread start-up and oversubscription cost more than they
    save, badly so in Ray replicas with fractional CPUs (measured on 2 cores: LogisticRegression on
    7.6k prompts 9 s with 2 threads vs 0.4 s with 1; KMeans k-search 66 s vs 11 s). Embedding is
    done before entering it, so the embedder's own threading is untouched.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def card_prices(experts: Sequence[ExpertCard]) -> dict[str, float]:
    """Price per expert ($/Mtok in + out): the cost proxy when the training table has none."""
    return {e.id: float(e.input_cost_per_mtok + e.output_cost_per_mtok) for e in experts}


class RandomStrategy(RoutingStrategy):
    """Uniformly random expert, reproducible: the draw is a hash of (seed, prompt text, expert id).

    Hashing instead of a shared RNG stream means a decision never depends on which other prompts were
    routed before it or alongside it in a batch.
    """

    name = "random"

    def __init__(self, *, seed: int = 0, top_k: int = 1) -> None:
        super().__init__(top_k=top_k)
        self.seed = seed

    def _draw(self, text: str, expert_id: str) -> float:
        digest = hashlib.blake2b(f"{self.seed}\x00{expert_id}\x00{text}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") / 2.0**64

    def score_experts(self, query: Query, experts: Sequence[ExpertCard]) -> Mapping[str, float]:
        return {e.id: self._draw(query.text, e.id) for e in experts}

    def explain(self, query: Query, experts: Sequence[ExpertCard]) -> dict[str, Any]:
        return {"seed": self.seed}


class BestSingleStrategy(RoutingStrategy):
    """Every prompt to the model with the best mean training score (`best_single_ranking`: missing = 0;
    ties → lower mean observed cost).

    If that model is not configured, the next-best configured one answers (base `_decide`).
    """

    name = "best_single"
    learned = True

    def __init__(self, *, top_k: int = 1) -> None:
        super().__init__(top_k=top_k)

    def fit(self, table: RoutingTable, embeddings: np.ndarray | None = None) -> BestSingleStrategy:
        quality = mean_quality(table)
        order = best_single_ranking(table)
        self.models_ = list(table.models)
        self.quality_ = quality
        self.scores_ = tiebroken_scores(quality, order)
        self.best_ = self.models_[int(order[0])]
        return self

    def score_experts(self, query: Query, experts: Sequence[ExpertCard]) -> Mapping[str, float]:
        self.check_fitted()
        return dict(zip(self.models_, self.scores_.tolist()))

    def explain(self, query: Query, experts: Sequence[ExpertCard]) -> dict[str, Any]:
        self.check_fitted()
        return {"best": self.best_, "train_quality": round(float(self.quality_[self.models_.index(self.best_)]), 4)}
