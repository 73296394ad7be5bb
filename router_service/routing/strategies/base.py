"""The routing-strategy interface (scikit-learn conventions) and the name → class registry.

A decision depends only on the query and the fitted state: `route_batch` exists for speed, never to
let one prompt's routing see another's.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from router_service.domain import ExpertCard, Query, RoutingDecision
from router_service.errors import NotFittedError, UnknownParameterError, UnknownStrategyError

if TYPE_CHECKING:
    from router_service.data.table import RoutingTable
    from router_service.routing.embedding import Embedder

# Names to "module:Class". Adding a strategy is one line here, never an if/elif factory.
_REGISTRY: dict[str, str] = {
    "fixed": "router_service.routing.strategies.rules:FixedStrategy",
    "keyword": "router_service.routing.strategies.rules:KeywordStrategy",
    "random": "router_service.routing.strategies.baselines:RandomStrategy",
    "best_single": "router_service.routing.strategies.baselines:BestSingleStrategy",
    "category": "router_service.routing.strategies.category:CategoryStrategy",
    "skill": "router_service.routing.strategies.skill:SkillStrategy",
    "cost_aware": "router_service.routing.strategies.cost_aware:CostAwareStrategy",
    "mlp": "router_service.routing.strategies.mlp:MLPStrategy",
    "mf": "router_service.routing.strategies.mf:MatrixFactorisationStrategy",
    "stack": "router_service.routing.strategies.stacking:StackingStrategy",
}


def known_strategies() -> list[str]:
    return sorted(_REGISTRY)


def check_strategy_name(name: str) -> str:
    """`name` when it is registered, else UnknownStrategyError naming the known ones (imports nothing)."""
    if name not in _REGISTRY:
        raise UnknownStrategyError(
            f"unknown strategy '{name}'; known strategies: {', '.join(known_strategies())}", name=name
        )
    return name


def strategy_class(name: str) -> type[RoutingStrategy]:
    module_name, class_name = _REGISTRY[check_strategy_name(name)].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_strategy(name: str, **params: Any) -> RoutingStrategy:
    return strategy_class(name)(**params)


class RoutingStrategy(abc.ABC):
    """Base class. `__init__` stores parameters only; `fit` learns attributes ending in `_`."""

    name: ClassVar[str] = "base"
    learned: ClassVar[bool] = False
    needs_embedding: ClassVar[bool] = False
    # True when the strategy trades quality against cost with `cost_weight` (λ).
    has_tradeoff: ClassVar[bool] = False

    def __init__(self, *, top_k: int = 1) -> None:
        self.top_k = top_k
        self.embedder: Embedder | None = None

    # -- parameters (scikit-learn style, so config can re-tune a loaded artifact) ---------------
    @classmethod
    def param_names(cls) -> list[str]:
        """Keyword parameters of `__init__`; `get_params`/`set_params` work on exactly these."""
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params: Any) -> RoutingStrategy:
        """Change routing-time parameters (e.g. cost_weight) without refitting; unknown names fail."""
        known = set(self.param_names())
        unknown = sorted(set(params) - known)
        if unknown:
            raise UnknownParameterError(
                f"strategy '{self.name}' has no parameter(s) {unknown}; known: {sorted(known)}",
                strategy=self.name,
                names=unknown,
            )
        for key, value in params.items():
            setattr(self, key, value)
        return self

    # -- learning -----------------------------------------------------------------------------
    def fit(self, table: RoutingTable, embeddings: np.ndarray | None = None) -> RoutingStrategy:
        """Learn from `table`. `embeddings` (one row per prompt) may be passed to skip encoding."""
        self.models_ = list(table.models)
        return self

    def _table_embeddings(self, table: RoutingTable, embeddings: np.ndarray | None) -> np.ndarray:
        if embeddings is not None:
            emb = np.asarray(embeddings, dtype=np.float32)
            if emb.shape[0] != len(table):
                raise ValueError(f"embeddings has {emb.shape[0]} rows, table has {len(table)} prompts")
            return emb
        if self.embedder is None:
            raise NotFittedError(f"strategy '{self.name}' needs an embedder to fit; call set_embedder()")
        return np.asarray(self.embedder.encode(list(table.prompts)), dtype=np.float32)

    def set_embedder(self, embedder: Embedder | None) -> RoutingStrategy:
        self.embedder = embedder
        return self

    def is_fitted(self) -> bool:
        return not self.learned or hasattr(self, "models_")

    def check_fitted(self) -> None:
        if not self.is_fitted():
            raise NotFittedError(f"strategy '{self.name}' is not fitted; call fit() or load an artifact")

    @property
    def fitted_experts(self) -> list[str] | None:
        """Expert ids the fitted state knows, or None for strategies that work with any expert."""
        return getattr(self, "models_", None) if self.learned else None

    # -- embedding ----------------------------------------------------------------------------
    def embed(self, queries: Sequence[Query]) -> np.ndarray:
        """Embeddings of each query's own text (precomputed ones are reused)."""
        missing = [i for i, q in enumerate(queries) if q.embedding is None]
        fresh = np.empty((0, 0))
        if missing:
            if self.embedder is None:
                raise NotFittedError(f"strategy '{self.name}' needs an embedder; none was injected")
            fresh = self.embedder.encode([queries[i].text for i in missing])
        rows, k = [], 0
        for q in queries:
            if q.embedding is None:
                rows.append(fresh[k])
                k += 1
            else:
                rows.append(np.asarray(q.embedding, dtype=np.float32))
        return np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def with_embeddings(self, queries: Sequence[Query]) -> list[Query]:
        if not self.needs_embedding:
            return list(queries)
        vectors = self.embed(queries)
        return [dataclasses.replace(q, embedding=v) for q, v in zip(queries, vectors)]

    # -- routing ------------------------------------------------------------------------------
    @abc.abstractmethod
    def score_experts(self, query: Query, experts: Sequence[ExpertCard]) -> Mapping[str, float]:
        """Higher is better. May include ids the fitted state knows but `experts` lacks."""

    def explain(self, query: Query, experts: Sequence[ExpertCard]) -> dict[str, Any]:
        """Strategy-specific explanation for the response's `routing.details`."""
        return {}

    def score_and_explain(
        self, query: Query, experts: Sequence[ExpertCard]
    ) -> tuple[Mapping[str, float], dict[str, Any]]:
        """Both at once; strategies whose scores and explanation share work override this."""
        return self.score_experts(query, experts), self.explain(query, experts)

    def route(self, query: Query, experts: Sequence[ExpertCard]) -> RoutingDecision:
        self.check_fitted()
        if not experts:
            raise ValueError("no experts to route to")
        query = self.with_embeddings([query])[0]
        raw_scores, details = self.score_and_explain(query, experts)
        scores = {k: float(v) for k, v in raw_scores.items()}
        return self._decide(query, experts, scores, details)

    def route_batch(self, queries: Sequence[Query], experts: Sequence[ExpertCard]) -> list[RoutingDecision]:
        """Same decisions as calling `route` on each query alone; embeds the batch in one call."""
        queries = self.with_embeddings(queries)
        return [self.route(q, experts) for q in queries]

    def _decide(
        self, query: Query, experts: Sequence[ExpertCard], scores: dict[str, float], details: dict[str, Any]
    ) -> RoutingDecision:
        present = {e.id: e for e in experts}
        cost_rank = {e.id: e.input_cost_per_mtok + e.output_cost_per_mtok for e in experts}
        ranked = sorted(scores, key=lambda i: (-scores[i], cost_rank.get(i, float("inf")), i))
        fallback: list[dict[str, Any]] = []
        chosen: list[str] = []
        k = query.top_k or self.top_k
        for expert_id in ranked:
            if expert_id not in present:
                if not chosen and len(fallback) < 3:
                    fallback.append({"wanted": expert_id, "reason": "expert not configured; used next-best"})
                continue
            chosen.append(expert_id)
            if len(chosen) >= k:
                break
        if not chosen:
            # The fitted state knows none of the configured experts: fall back to the cheapest generalist.
            generalists = [e for e in experts if e.generalist] or list(experts)
            pick = min(generalists, key=lambda e: (cost_rank[e.id], e.id)).id
            fallback.append(
                {"wanted": ranked[0] if ranked else None, "reason": "no scored expert is configured; used generalist"}
            )
            chosen = [pick]
        return RoutingDecision(
            expert_ids=chosen,
            scores={i: scores[i] for i in ranked if i in present},
            strategy=self.name,
            details=details,
            fallback=fallback,
        )
