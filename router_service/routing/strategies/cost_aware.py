"""CARROT (Somerstep et al. 2025): predict each expert's quality and cost for the prompt, then pick

    argmax_m  (1 − λ) · quality_m − λ · cost_m / cost_scale

λ (`cost_weight`) is per request (`Query.cost_weight`), else this strategy's `cost_weight` (default
0.0, the same as `RouterConfig.cost_weight`: pure quality unless someone asks for savings).

Estimators, both on the L2-normalised prompt embedding, one set per target (quality, cost):
* "knn": mean target of the k most cosine-similar training prompts (missing cells skipped);
* "linear": ridge regression;
* "auto" (default): 5-fold CV on the training table picks k ∈ k_grid for kNN and α ∈ alpha_grid for
  ridge, then whichever of the two has the lower CV mean squared error. "knn" and "linear" search only
  their own grid. With no search (cv < 2), kNN takes the middle of k_grid and ridge the first α.

Cost normalisation: `cost_scale_` = the largest per-model mean training cost, so the most expensive
model costs ≈1 on a typical prompt and λ means the same trade-off on any table whatever its currency.
A table without costs falls back to the experts' configured prices ($/Mtok in + out), divided by the
largest of the configured experts' prices; no prices at all → every expert costs the same.

Serving is plain numpy (one mat-vec and a partial sort per prompt, ~0.1 ms for 10k training prompts),
computed per prompt even in a batch: a batched GEMM can differ from a GEMV in the last bits and flip a
near-tied neighbour, which would make a decision depend on the batch. Past `knn_exact_max_rows`
training prompts the neighbours come from an inverted-file index (`routing.knn_index`), not a full scan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from router_service.domain import ExpertCard, Query
from router_service.routing.embedding import l2_normalise
from router_service.routing.knn_index import EXACT_MAX_ROWS, KnnIndex, top_of
from router_service.routing.strategies.base import RoutingStrategy
from router_service.routing.strategies.baselines import card_prices, mean_cost, one_thread

if TYPE_CHECKING:
    from router_service.data.table import RoutingTable

ESTIMATORS = ("auto", "knn", "linear")


class _Target:
    """Training targets with missing cells: values filled with the column mean, and a 0/1 mask."""

    def __init__(self, y: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float64)
        self.mask = (~np.isnan(y)).astype(np.float64)
        counts = self.mask.sum(axis=0)
        self.col_mean = np.where(counts > 0, np.nansum(y, axis=0) / np.maximum(counts, 1), 0.0)
        self.filled = np.where(self.mask > 0, y, self.col_mean)


def grid_cv_errors(
    t: _Target,
    folds: list[tuple[np.ndarray, np.ndarray]],
    grid: Sequence[Any],
    fit_predict: Callable[[Any, np.ndarray, np.ndarray], np.ndarray],
) -> dict[Any, float]:
    """CV mean squared error over the observed cells, per grid point. `fit_predict(point, train, val)`
    fits on the training rows with that point and returns its predictions for the validation rows."""
    errors: dict[Any, float] = {}
    for point in grid:
        squared, seen_total = 0.0, 0.0
        for train, val in folds:
            seen = t.mask[val]
            squared += float((((fit_predict(point, train, val) - t.filled[val]) ** 2) * seen).sum())
            seen_total += float(seen.sum())
        errors[point] = squared / max(seen_total, 1.0)
    return errors


def _knn_cv_errors(
    x: np.ndarray, t: _Target, folds: list[tuple[np.ndarray, np.ndarray]], k_grid: Sequence[int]
) -> dict[int, float]:
    """CV mean squared error per k; one similarity sort per fold serves every k (cumulative sums).
    Validation rows go in chunks, so memory stays bounded on a 100k-prompt table."""
    sq = {k: 0.0 for k in k_grid}
    total = 0.0
    chunk = 2048
    for train, fold_val in folds:
        kmax = min(max(k_grid), len(train))
        for start in range(0, len(fold_val), chunk):
            val = fold_val[start : start + chunk]
            sims = x[val] @ x[train].T
            nearest = np.argpartition(-sims, kmax - 1, axis=1)[:, :kmax]
            order = np.take_along_axis(sims, nearest, axis=1).argsort(axis=1)[:, ::-1]
            nearest = np.take_along_axis(nearest, order, axis=1)
            ys = np.cumsum((t.filled * t.mask)[train][nearest], axis=1)  # (val, kmax, models)
            ms = np.cumsum(t.mask[train][nearest], axis=1)
            truth, seen = t.filled[val], t.mask[val]
            total += seen.sum()
            for k in k_grid:
                kk = min(k, kmax) - 1
                pred = np.where(ms[:, kk] > 0, ys[:, kk] / np.maximum(ms[:, kk], 1), t.col_mean)
                sq[k] += float((((pred - truth) ** 2) * seen).sum())
    return {k: sq[k] / max(total, 1.0) for k in k_grid}


def _ridge_cv_errors(
    x: np.ndarray, t: _Target, folds: list[tuple[np.ndarray, np.ndarray]], alpha_grid: Sequence[float]
) -> dict[float, float]:
    from sklearn.linear_model import Ridge

    sq = {a: 0.0 for a in alpha_grid}
    total = 0.0
    for train, val in folds:
        seen = t.mask[val]
        total += seen.sum()
        for a in alpha_grid:
            pred = Ridge(alpha=a).fit(x[train], t.filled[train]).predict(x[val])
            sq[a] += float((((pred - t.filled[val]) ** 2) * seen).sum())
    return {a: sq[a] / max(total, 1.0) for a in alpha_grid}


class CostAwareStrategy(RoutingStrategy):
    """CARROT router. Parameters:

    cost_weight: default λ in [0, 1] when a request gives none.
    estimator: "auto" | "knn" | "linear" (see module docstring).
    k: fixed neighbour count (skips the k search); k_grid / alpha_grid: CV search spaces.
    cv: folds for the search. seed: fold shuffling. top_k: experts per request.
    knn_exact_max_rows: above this many training prompts, kNN searches an inverted-file index
    (`knn_n_probe` lists of about √n) instead of scanning every prompt.

    Learned: quality_model_, cost_model_ (each {"kind": "knn"|"linear", ...}), cost_scale_, models_,
    and knn_index_ (a KnnIndex over the training embeddings; None when no estimator is kNN).
    """

    name = "cost_aware"
    learned = True
    needs_embedding = True
    has_tradeoff = True

    def __init__(
        self,
        *,
        cost_weight: float = 0.0,
        estimator: str = "auto",
        k: int | None = None,
        k_grid: Sequence[int] = (5, 10, 20, 40, 80),
        alpha_grid: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
        cv: int = 5,
        seed: int = 0,
        top_k: int = 1,
        knn_exact_max_rows: int = EXACT_MAX_ROWS,
        knn_n_probe: int = 16,
    ) -> None:
        super().__init__(top_k=top_k)
        self.knn_exact_max_rows = knn_exact_max_rows
        self.knn_n_probe = knn_n_probe
        self.cost_weight = cost_weight
        self.estimator = estimator
        self.k = k
        self.k_grid = k_grid
        self.alpha_grid = alpha_grid
        self.cv = cv
        self.seed = seed

    # -- learning -----------------------------------------------------------------------------
    def _fit_target(self, x: np.ndarray, y: np.ndarray, folds) -> dict[str, Any]:
        """Choose and fit one estimator for targets y (n, m); returns what serving needs."""
        t = _Target(y)
        k_grid = [self.k] if self.k else sorted({min(k, len(x)) for k in self.k_grid})
        knn_err, ridge_err = {}, {}
        if self.estimator in ("auto", "knn") and folds and len(k_grid) > 1:
            knn_err = _knn_cv_errors(x, t, folds, k_grid)
        if self.estimator in ("auto", "linear") and folds:
            ridge_err = _ridge_cv_errors(x, t, folds, self.alpha_grid)
        k_best = min(knn_err, key=knn_err.__getitem__) if knn_err else k_grid[len(k_grid) // 2]
        use_linear = self.estimator == "linear" or (
            bool(ridge_err) and min(ridge_err.values()) < knn_err.get(k_best, np.inf)
        )
        if use_linear:
            from sklearn.linear_model import Ridge

            alpha = min(ridge_err, key=ridge_err.__getitem__) if ridge_err else self.alpha_grid[0]
            ridge = Ridge(alpha=alpha).fit(x, t.filled)
            return {
                "kind": "linear",
                "alpha": float(alpha),
                "coef": np.asarray(ridge.coef_.T, dtype=np.float64),
                "intercept": np.asarray(ridge.intercept_, dtype=np.float64),
                "cv_mse": ridge_err.get(alpha),
            }
        return {
            "kind": "knn",
            "k": int(k_best),
            "sum": t.filled * t.mask,
            "mask": t.mask,
            "col_mean": t.col_mean,
            "cv_mse": knn_err.get(k_best),
        }

    def _fit_quality(self, x: np.ndarray, y: np.ndarray, folds: list) -> dict[str, Any]:
        """The quality head; subclasses with another learner override this (`mlp`)."""
        return self._fit_target(x, y, folds)

    def fit(self, table: RoutingTable, embeddings: np.ndarray | None = None) -> CostAwareStrategy:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if len(table) == 0:
            raise ValueError("cannot fit on an empty table")
        x = l2_normalise(self._table_embeddings(table, embeddings))
        with one_thread():
            return self._fit(table, x)

    def _fit(self, table: RoutingTable, x: np.ndarray) -> CostAwareStrategy:
        folds = []
        if self.cv >= 2 and len(x) >= 2 * self.cv:
            from sklearn.model_selection import KFold

            folds = list(KFold(self.cv, shuffle=True, random_state=self.seed).split(x))
        self.quality_model_ = self._fit_table_quality(table, x, folds)
        self.cost_model_ = None
        self.cost_scale_ = 1.0
        if table.costs is not None:
            per_model = mean_cost(table)
            assert per_model is not None  # the table has costs
            scale = float(np.nanmax(per_model)) if np.any(np.isfinite(per_model)) else 0.0
            self.cost_scale_ = scale if scale > 0 else 1.0
            self.cost_model_ = self._fit_target(x, table.costs / self.cost_scale_, folds)
        # Training embeddings, only needed by kNN estimators (linear ones are self-contained).
        needs_x = "knn" in (self.quality_model_["kind"], (self.cost_model_ or {}).get("kind"))
        self.knn_index_ = (
            KnnIndex(x, exact_max_rows=self.knn_exact_max_rows, n_probe=self.knn_n_probe, seed=self.seed)
            if needs_x
            else None
        )
        self.models_ = list(table.models)
        return self

    def _fit_table_quality(self, table: RoutingTable, x: np.ndarray, folds: list) -> dict[str, Any]:
        """The quality head from the whole table; a learner that needs more than the scores (`stack`:
        the prompts, the categories) overrides this, the others override `_fit_quality`."""
        return self._fit_quality(x, table.scores, folds)

    # -- prediction ---------------------------------------------------------------------------
    def _predict(self, model: dict[str, Any], e: np.ndarray, neighbours) -> np.ndarray:
        if model["kind"] == "linear":
            return e.astype(np.float64) @ model["coef"] + model["intercept"]
        assert neighbours is not None  # kNN models are always given the query's nearest training prompts
        idx = top_of(neighbours, model["k"])
        seen = model["mask"][idx].sum(axis=0)
        return np.where(seen > 0, model["sum"][idx].sum(axis=0) / np.maximum(seen, 1), model["col_mean"])

    def _predict_quality(self, query: Query, e: np.ndarray, neighbours) -> np.ndarray:
        """Quality per fitted model for one prompt (`e`: its L2-normalised embedding)."""
        return self._predict(self.quality_model_, e, neighbours)

    def predict(self, query: Query, experts: Sequence[ExpertCard]) -> tuple[np.ndarray, np.ndarray]:
        """(quality, normalised cost) per fitted model, in `models_` order."""
        self.check_fitted()
        if query.embedding is None:
            query = self.with_embeddings([query])[0]
        e = l2_normalise(np.asarray(query.embedding))
        neighbours = None
        if self.knn_index_ is not None:
            ks = [m["k"] for m in (self.quality_model_, self.cost_model_) if m is not None and m["kind"] == "knn"]
            neighbours = self.knn_index_.search(e, max(ks))
        quality = np.clip(self._predict_quality(query, e, neighbours), 0.0, 1.0)
        if self.cost_model_ is not None:
            cost = np.maximum(self._predict(self.cost_model_, e, neighbours), 0.0)
        else:
            prices = card_prices(experts)
            top = max(prices.values(), default=0.0)
            cost = np.array([prices.get(m, 0.0) / top if top > 0 else 0.0 for m in self.models_])
        return quality, cost

    def _lambda(self, query: Query) -> float:
        lam = self.cost_weight if query.cost_weight is None else query.cost_weight
        return float(min(max(lam, 0.0), 1.0))

    def score_and_explain(
        self, query: Query, experts: Sequence[ExpertCard]
    ) -> tuple[Mapping[str, float], dict[str, Any]]:
        quality, cost = self.predict(query, experts)
        lam = self._lambda(query)
        utility = (1.0 - lam) * quality - lam * cost
        details = {
            "lambda": lam,
            "quality": {m: round(float(q), 4) for m, q in zip(self.models_, quality)},
            "cost": {m: round(float(c), 4) for m, c in zip(self.models_, cost)},
        }
        return dict(zip(self.models_, utility.tolist())), details

    def score_experts(self, query: Query, experts: Sequence[ExpertCard]) -> Mapping[str, float]:
        return self.score_and_explain(query, experts)[0]

    def explain(self, query: Query, experts: Sequence[ExpertCard]) -> dict[str, Any]:
        return self.score_and_explain(query, experts)[1]
