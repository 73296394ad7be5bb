"""Matrix-factorisation router (RouteLLM's `mf`, EmbedLLM's correctness model): a vector per expert and a
learned projection of the prompt embedding; their dot product, through a sigmoid, is the predicted
quality of that expert on that prompt:

    quality(p, m) = σ( (x_p · A) · v_m + b_m )

x_p is the L2-normalised prompt embedding (d), A a d × r projection, v_m the expert's r-vector and b_m
its bias. RouteLLM fits such a model on pairwise preferences; the tables here score every expert on
every prompt, so it is fitted pointwise, as EmbedLLM does: binary cross-entropy against the cell (a
score in [0, 1]; a missing cell is left out of the loss), plus an L2 penalty on A and the v_m.

Learning is plain numpy: full-batch Adam for `epochs` steps from a seeded small random start. The rank
and the L2 strength are chosen by `cv`-fold cross-validation (mean squared error of the predicted
quality over the observed cells) on the training table only, then the model is refitted on all of it.
The choice is CARROT's, argmax (1 − λ)·quality − λ·cost, with cost_aware's cost head (see cost_aware).

Serving is one (d × r) mat-vec and an (m × r) one per prompt, so a decision never depends on the other
prompts of a batch. Learned attribute: `quality_model_` {"kind": "mf", "projection" (d × r),
"expert_vectors" (m × r), "bias" (m), "rank", "l2", "cv_mse"}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router_service.routing.strategies.cost_aware import CostAwareStrategy, _Target, grid_cv_errors


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + e^-z)


def fit_mf(
    x: np.ndarray, t: _Target, *, rank: int, l2: float, epochs: int, lr: float, seed: int
) -> dict[str, np.ndarray]:
    """Full-batch Adam on masked binary cross-entropy + l2·(|A|² + |V|²); returns the parameters."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    m = t.filled.shape[1]
    col = np.clip(t.col_mean, 1e-3, 1 - 1e-3)
    params = {
        "projection": rng.normal(0.0, 0.1, (d, rank)),
        "expert_vectors": rng.normal(0.0, 0.1, (m, rank)),
        "bias": np.log(col / (1 - col)),  # start at each expert's mean quality
    }
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    observed = max(float(t.mask.sum()), 1.0)
    xs = x.astype(np.float64)
    for step in range(1, epochs + 1):
        a, v, b = params["projection"], params["expert_vectors"], params["bias"]
        # Logits x·(A·Vᵀ) + b: through the d × m product, never the n × r one, which is r/m times the work.
        pred = _sigmoid(xs @ (a @ v.T) + b)
        # d(mean BCE)/d(logit) = (pred − y) on observed cells.
        g = (pred - t.filled) * t.mask / observed
        xg = xs.T @ g  # (d, m): both factor gradients go through it
        grads = {
            "projection": xg @ v + 2 * l2 * a,
            "expert_vectors": xg.T @ a + 2 * l2 * v,
            "bias": g.sum(axis=0),
        }
        for key, grad in grads.items():
            m1, m2 = moments[key]
            m1 *= beta1
            m1 += (1 - beta1) * grad
            m2 *= beta2
            m2 += (1 - beta2) * grad * grad
            params[key] = params[key] - lr * (m1 / (1 - beta1**step)) / (np.sqrt(m2 / (1 - beta2**step)) + eps)
    return params


def predict_mf(params: dict[str, Any], x: np.ndarray) -> np.ndarray:
    h = np.asarray(x, dtype=np.float64) @ params["projection"]
    return _sigmoid(h @ params["expert_vectors"].T + params["bias"])


class MatrixFactorisationStrategy(CostAwareStrategy):
    """MF router. Parameters:

    cost_weight: default λ in [0, 1] when a request gives none.
    rank_grid: ranks r searched; l2_grid: L2 strengths searched; epochs, learning_rate: Adam's.
    cv: folds for the search (< 2: no search, the first of each grid). seed: start and folds.
    top_k: experts per request.

    Attributes (after `fit`): quality_model_ (module docstring), cost_model_ and cost_scale_ (as
    cost_aware), models_.
    """

    name = "mf"

    def __init__(
        self,
        *,
        cost_weight: float = 0.0,
        rank_grid: Sequence[int] = (16, 64),
        l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2),
        epochs: int = 300,
        learning_rate: float = 0.01,
        cv: int = 5,
        seed: int = 0,
        top_k: int = 1,
    ) -> None:
        super().__init__(cost_weight=cost_weight, cv=cv, seed=seed, top_k=top_k)
        self.rank_grid = rank_grid
        self.l2_grid = l2_grid
        self.epochs = epochs
        self.learning_rate = learning_rate

    def _fit_params(self, x: np.ndarray, t: _Target, rank: int, l2: float) -> dict[str, np.ndarray]:
        return fit_mf(x, t, rank=rank, l2=l2, epochs=self.epochs, lr=self.learning_rate, seed=self.seed)

    def _fit_quality(self, x: np.ndarray, y: np.ndarray, folds: list) -> dict[str, Any]:
        t = _Target(y)
        grid = [(int(r), float(a)) for r in self.rank_grid for a in self.l2_grid]
        errors: dict[Any, float] = {}
        if folds and len(grid) > 1:

            def fit_predict(point: tuple[int, float], train: np.ndarray, val: np.ndarray) -> np.ndarray:
                return predict_mf(self._fit_params(x[train], _Target(y[train]), *point), x[val])

            errors = grid_cv_errors(t, folds, grid, fit_predict)
        rank, l2 = min(errors, key=errors.__getitem__) if errors else grid[0]
        params = self._fit_params(x, t, rank, l2)
        return {"kind": "mf", **params, "rank": rank, "l2": l2, "cv_mse": errors.get((rank, l2))}

    def _predict(self, model: dict[str, Any], e: np.ndarray, neighbours) -> np.ndarray:
        if model["kind"] != "mf":
            return super()._predict(model, e, neighbours)
        return predict_mf(model, e)
