"""Strategies that need no training: a fixed expert, and keyword rules."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from router_service.domain import ExpertCard, Query
from router_service.routing.strategies.base import RoutingStrategy


class FixedStrategy(RoutingStrategy):
    """Every prompt to one expert (the configured default, else the first expert)."""

    name = "fixed"

    def __init__(self, *, expert: str | None = None, top_k: int = 1) -> None:
        super().__init__(top_k=top_k)
        self.expert = expert

    def score_experts(self, query: Query, experts: Sequence[ExpertCard]) -> Mapping[str, float]:
        target = self.expert or experts[0].id
        return {e.id: (1.0 if e.id == target else 0.0) for e in experts}


class KeywordStrategy(RoutingStrategy):
    """Score = number of an expert's keywords found in the prompt (whole words, case-insensitive).

    Keywords come from config rules, and each expert's `skills`. A prompt that matches nothing goes
    to the default expert.
    """

    name = "keyword"

    def __init__(
        self,
        *,
        rules: Mapping[str, Sequence[str]] | None = None,
        default_expert: str | None = None,
        use_skills: bool = True,
        top_k: int = 1,
    ) -> None:
        super().__init__(top_k=top_k)
        self.rules = dict(rules or {})
        self.default_expert = default_expert
        self.use_skills = use_skills

    def _keywords(self, expert: ExpertCard) -> list[str]:
        words = list(self.rules.get(expert.id, ()))
        if self.use_skills:
            words += list(expert.skills)
        return words

    @staticmethod
    def _count(text: str, words: Sequence[str]) -> int:
        lowered = text.lower()
        hits = 0
        for word in words:
            w = word.lower()
            if re.fullmatch(r"\w[\w ]*", w):
                hits += len(re.findall(rf"(?<!\w){re.escape(w)}(?!\w)", lowered))
            else:
                hits += lowered.count(w)
        return hits

    def score_experts(self, query: Query, experts: Sequence[ExpertCard]) -> Mapping[str, float]:
        scores = {e.id: float(self._count(query.text, self._keywords(e))) for e in experts}
        if max(scores.values(), default=0.0) == 0.0:
            default = self.default_expert or next((e.id for e in experts if e.generalist), experts[0].id)
            scores[default] = 0.5
        return scores

    def explain(self, query: Query, experts: Sequence[ExpertCard]) -> dict[str, Any]:
        matched = {e.id: [w for w in self._keywords(e) if self._count(query.text, [w])] for e in experts}
        return {"matched_keywords": {k: v for k, v in matched.items() if v}}
