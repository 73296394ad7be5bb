"""MLP router (RouterBench's MLP router): a small neural head on the prompt embedding predicts every
expert's quality at once; the choice is CARROT's, argmax (1 − λ) · quality − λ · cost (see cost_aware).

Learning: scikit-learn's `MLPRegressor` (ReLU, squared error, Adam, early stopping on a seeded 10%
slice) on the L2-normalised embedding, one output per expert; a missing cell is filled with that
expert's mean, as in cost_aware. The hidden
size and the L2 strength `alpha` are chosen by `cv`-fold cross-validation (mean squared error over the
observed cells) on the training table only, then the head is refitted on all of it. Predictions are
clipped to [0, 1]. The cost head is cost_aware's (kNN or ridge, chosen by CV), when the table has costs.

Serving is plain numpy, one prompt at a time (a forward pass of a few hundred multiply-adds per
expert), so a decision never depends on the other prompts of a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router_service.routing.strategies.cost_aware import CostAwareStrategy, _Target, grid_cv_errors


def _mlp(hidden: Sequence[int], alpha: float, seed: int, max_iter: int) -> Any:
    from sklearn.neural_network import MLPRegressor

    # Early stopping on a seeded 10% slice of the training rows: about 4x fewer epochs than a fixed
    # budget, which keeps the CV search within minutes on two cores for model7's 7,598 prompts.
    return MLPRegressor(
        hidden_layer_sizes=tuple(hidden),
        alpha=alpha,
        max_iter=max_iter,
        random_state=seed,
        early_stopping=True,
        n_iter_no_change=10,
    )


class MLPStrategy(CostAwareStrategy):
    """MLP router. Parameters:

    cost_weight: default λ in [0, 1] when a request gives none.
    hidden_grid: hidden-layer sizes searched; mlp_alpha_grid: L2 strengths searched.
    max_iter: Adam epochs. cv: folds for the search (< 2: no search, the first of each grid).
    seed: weights and folds. top_k: experts per request.

    Attributes (after `fit`): quality_model_ (kind "mlp": layer weights, the chosen hidden size and
    alpha, their CV error), cost_model_ and cost_scale_ (as cost_aware), models_.
    """

    name = "mlp"

    def __init__(
        self,
        *,
        cost_weight: float = 0.0,
        hidden_grid: Sequence[Sequence[int]] = ((128,), (256,)),
        mlp_alpha_grid: Sequence[float] = (1e-3, 1e-2, 1e-1),
        max_iter: int = 200,
        cv: int = 5,
        seed: int = 0,
        top_k: int = 1,
    ) -> None:
        super().__init__(cost_weight=cost_weight, cv=cv, seed=seed, top_k=top_k)
        self.hidden_grid = hidden_grid
        self.mlp_alpha_grid = mlp_alpha_grid
        self.max_iter = max_iter

    def _fit_quality(self, x: np.ndarray, y: np.ndarray, folds: list) -> dict[str, Any]:
        t = _Target(y)
        grid = [(tuple(h), float(a)) for h in self.hidden_grid for a in self.mlp_alpha_grid]
        errors: dict[Any, float] = {}
        if folds and len(grid) > 1:

            def fit_predict(point: tuple[tuple[int, ...], float], train: np.ndarray, val: np.ndarray) -> np.ndarray:
                head = _mlp(point[0], point[1], self.seed, self.max_iter).fit(x[train], t.filled[train])
                return head.predict(x[val])

            errors = grid_cv_errors(t, folds, grid, fit_predict)
        hidden, alpha = min(errors, key=errors.__getitem__) if errors else grid[0]
        head = _mlp(hidden, alpha, self.seed, self.max_iter).fit(x, t.filled)
        return {
            "kind": "mlp",
            "hidden": list(hidden),
            "alpha": alpha,
            "weights": [np.asarray(w, dtype=np.float64) for w in head.coefs_],
            "biases": [np.asarray(b, dtype=np.float64) for b in head.intercepts_],
            "cv_mse": errors.get((hidden, alpha)),
        }

    def _predict(self, model: dict[str, Any], e: np.ndarray, neighbours) -> np.ndarray:
        if model["kind"] != "mlp":
            return super()._predict(model, e, neighbours)
        h = e.astype(np.float64)
        layers = list(zip(model["weights"], model["biases"]))
        for weight, bias in layers[:-1]:
            h = np.maximum(h @ weight + bias, 0.0)
        weight, bias = layers[-1]
        return h @ weight + bias
