"""RoutingTable: the training/eval data of a router (prompts × models → score, cost)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RoutingTable:
    """One row per prompt.

    scores: (n_prompts, n_models) in [0, 1], NaN where a model has no score for a prompt.
    costs:  (n_prompts, n_models) in dollars, or None when the table has no cost (all models equal).
    categories: one label per prompt, or None when the source has none.
    """

    prompts: list[str]
    models: list[str]
    scores: np.ndarray
    costs: np.ndarray | None = None
    categories: list[str] | None = None
    sources: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        n, m = len(self.prompts), len(self.models)
        if self.scores.shape != (n, m):
            raise ValueError(f"scores has shape {self.scores.shape}, expected ({n}, {m})")
        if self.costs is not None:
            self.costs = np.asarray(self.costs, dtype=np.float64)
            if self.costs.shape != (n, m):
                raise ValueError(f"costs has shape {self.costs.shape}, expected ({n}, {m})")
        if self.categories is not None and len(self.categories) != n:
            raise ValueError("categories must have one label per prompt")
        if len(set(self.models)) != m:
            raise ValueError("model names must be unique")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def has_costs(self) -> bool:
        return self.costs is not None

    def cost_matrix(self) -> np.ndarray:
        """Costs with missing values as 0; a table without costs costs 1 per call for every model."""
        if self.costs is None:
            return np.ones_like(self.scores)
        return np.nan_to_num(self.costs, nan=0.0)

    def score_matrix(self) -> np.ndarray:
        """Scores with missing values counted as 0 (a missing answer earns nothing)."""
        return np.nan_to_num(self.scores, nan=0.0)

    def subset(self, index: Sequence[int] | np.ndarray) -> RoutingTable:
        idx = np.asarray(index, dtype=int)
        return RoutingTable(
            prompts=[self.prompts[i] for i in idx],
            models=list(self.models),
            scores=self.scores[idx],
            costs=None if self.costs is None else self.costs[idx],
            categories=None if self.categories is None else [self.categories[i] for i in idx],
            sources=None if self.sources is None else [self.sources[i] for i in idx],
        )

    def select_models(self, models: Sequence[str]) -> RoutingTable:
        missing = [m for m in models if m not in self.models]
        if missing:
            raise ValueError(f"models not in table: {missing}; table has {self.models}")
        cols = [self.models.index(m) for m in models]
        return RoutingTable(
            prompts=list(self.prompts),
            models=list(models),
            scores=self.scores[:, cols],
            costs=None if self.costs is None else self.costs[:, cols],
            categories=self.categories,
            sources=self.sources,
        )

    @staticmethod
    def concat(tables: Sequence[RoutingTable]) -> RoutingTable:
        if not tables:
            raise ValueError("no tables to concatenate")
        models = tables[0].models
        for t in tables[1:]:
            if t.models != models:
                raise ValueError(f"tables have different models: {models} vs {t.models}")
        any_costs = any(t.costs is not None for t in tables)
        all_cats = all(t.categories is not None for t in tables)
        return RoutingTable(
            prompts=[p for t in tables for p in t.prompts],
            models=list(models),
            scores=np.concatenate([t.scores for t in tables]),
            costs=np.concatenate(
                [t.cost_matrix() if t.costs is not None else np.full_like(t.scores, np.nan) for t in tables]
            )
            if any_costs
            else None,
            categories=[c for t in tables for c in (t.categories or [])] if all_cats else None,
            sources=[s for t in tables for s in (t.sources if t.sources is not None else [""] * len(t))],
        )
