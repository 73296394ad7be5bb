"""Symbolic Mixture-of-Experts (Chen et al. 2025): route by the skills a prompt needs.

1. Annotate: each prompt gets 2–5 skill keywords. The default annotator needs no LLM: it picks the
   skills of a shipped vocabulary (`SKILLS`) nearest to the prompt in embedding space, those whose
   cosine similarity is at least `min_similarity`, clamped to [min_skills, max_skills].
   `LLMSkillAnnotator` asks a model instead (any `complete(prompt) -> str`, e.g. one of our experts).
2. Profile (fit): per model and skill, +1 for each training prompt with that skill the model got right
   (score ≥ 0.5), −1 for each it got wrong; a missing score is no evidence.
3. Recruit (route): each prompt skill is mapped to the nearest profile skill by embedding similarity;
   a model's local suitability is the sum of its ±1 profile over the prompt's skills, rescaled by the
   evidence into a win rate in [0, 1] and smoothed toward its global strength g (mean training score):
       suitability = (Σ right + prior·g) / (Σ seen + prior)
   (with no missing scores and prior 0 this ranks models exactly like the paper's Σ ±1). Strength then
   enters as the prior, so it decides for rarely seen skills and yields to the local evidence for
   common ones. The paper also multiplies by g; that is `strength_power=1` (score = suitability ·
   g^strength_power). The default 0 does not, because g is already the prior: multiplying counts it
   twice and drags every prompt toward the best generalist (5-fold CV on model7: 0.563 with the
   product vs 0.570 without; best_single 0.542). Top-k by score, deterministic; `temperature > 0`
   samples with Gumbel noise drawn from a hash of (seed, prompt, model), so even sampling never
   depends on other prompts.

The default `min_similarity` 0.3 lies between the typical cosine of a model7 prompt's nearest skill
under MiniLM (median 0.36) and of its 5th nearest (median 0.22), so a typical prompt keeps its few
clearly relevant skills rather than always 5.

These two defaults were chosen on the model7 routing tables (`../shared/data/routing/model7`); see
`SkillStrategy` for what was tuned on what, and the README's "What was tuned on what".
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from router_service.domain import ExpertCard, Query
from router_service.routing.embedding import l2_normalise
from router_service.routing.strategies.base import RoutingStrategy
from router_service.routing.strategies.baselines import mean_quality

if TYPE_CHECKING:
    from router_service.data.table import RoutingTable
    from router_service.routing.embedding import Embedder

# Broad academic and practical skills; written once from general knowledge of LLM benchmarks' subject
# areas, not from any routing table, so it does not encode the training data.
SKILLS: tuple[str, ...] = (
    # mathematics
    "arithmetic",
    "math word problems",
    "algebra",
    "geometry",
    "calculus",
    "probability and statistics",
    "number theory",
    "linear algebra",
    "fractions and percentages",
    "counting and combinatorics",
    "unit conversion",
    "mathematical proof",
    # natural sciences
    "physics",
    "mechanics and motion",
    "electricity and magnetism",
    "chemistry",
    "organic chemistry",
    "biology",
    "genetics and heredity",
    "cell biology",
    "ecology and environment",
    "evolution",
    "astronomy and space",
    "earth science and geology",
    "weather and climate",
    "plants and animals",
    "human anatomy and physiology",
    "medicine and clinical knowledge",
    "nutrition and health",
    "virology and disease",
    "pharmacology",
    # social sciences and humanities
    "psychology",
    "sociology",
    "economics",
    "microeconomics",
    "macroeconomics",
    "accounting",
    "finance",
    "business management",
    "marketing",
    "law",
    "jurisprudence",
    "international law",
    "political science",
    "government and politics",
    "world history",
    "us history",
    "european history",
    "ancient history",
    "geography",
    "philosophy",
    "ethics and morality",
    "religion",
    "world religions",
    "literature",
    "art and music",
    "public relations",
    "security studies",
    "human sexuality",
    # computing
    "python programming",
    "writing a function",
    "algorithms",
    "data structures",
    "string manipulation",
    "list and array processing",
    "sorting and searching",
    "recursion",
    "computer science",
    "computer security",
    "machine learning",
    "databases and sql",
    "computer networks",
    "electrical engineering",
    # language
    "reading comprehension",
    "english grammar",
    "vocabulary and word meaning",
    "translation",
    "chinese language",
    "chinese history and culture",
    "chinese law and government",
    "writing and style",
    # reasoning
    "commonsense reasoning",
    "logical reasoning",
    "formal logic",
    "causal reasoning",
    "pronoun resolution",
    "everyday physical reasoning",
    "social situations",
    "elementary science",
    "multiple choice questions",
    "trivia and general knowledge",
    "sentence completion",
)

SKILL_PROMPT = (
    "List the 2 to 5 skills or knowledge areas (short keywords, e.g. 'algebra', 'python programming', "
    "'world history') needed to answer the following question. Reply with the keywords only, comma "
    "separated.\n\nQuestion:\n{question}\n\nSkills:"
)


def _hash_uniform(seed: int, text: str, model: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{model}\x00{text}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") + 0.5) / 2.0**64


class SkillAnnotator(abc.ABC):
    """Gives a prompt its skill keywords. `fit` sees the embedder once, before any `annotate`."""

    kind: ClassVar[str] = "custom"  # what `routing.details.annotator` reports

    def fit(self, embedder: Embedder) -> SkillAnnotator:
        return self

    @abc.abstractmethod
    def annotate(self, text: str, embedding: np.ndarray) -> list[str]:
        """2–5 keywords for one prompt (its text and its embedding)."""


class EmbeddingSkillAnnotator(SkillAnnotator):
    """Nearest skills of a vocabulary to the prompt embedding (cosine ≥ min_similarity, 2–5 of them)."""

    kind = "embedding"

    def __init__(
        self, vocabulary: Sequence[str] = SKILLS, min_similarity: float = 0.3, min_skills: int = 2, max_skills: int = 5
    ) -> None:
        self.vocabulary = tuple(vocabulary)
        self.min_similarity = min_similarity
        self.min_skills = min_skills
        self.max_skills = max_skills

    def fit(self, embedder: Embedder) -> EmbeddingSkillAnnotator:
        self.vectors_ = l2_normalise(embedder.encode(list(self.vocabulary)))
        return self

    def annotate_scored(self, embedding: np.ndarray) -> list[tuple[str, float]]:
        sims = self.vectors_ @ np.asarray(embedding, dtype=np.float32)
        top = np.argsort(-sims, kind="stable")[: self.max_skills]
        keep = [int(i) for n, i in enumerate(top) if n < self.min_skills or sims[i] >= self.min_similarity]
        return [(self.vocabulary[i], float(sims[i])) for i in keep]

    def annotate(self, text: str, embedding: np.ndarray) -> list[str]:
        return [kw for kw, _ in self.annotate_scored(embedding)]


class LLMSkillAnnotator(SkillAnnotator):
    """Asks an LLM for the keywords. `complete(prompt) -> str` is any completion callable.

    The callable is not saved in artifacts (it is usually a live client): after loading, pass a new one
    with `set_complete`. Served, the router asks an expert itself (`router.skill_annotator`,
    `serving.skill_annotation`) and hands the keywords over in `Query.skills`.
    """

    kind = "llm"

    def __init__(
        self,
        complete: Callable[[str], str] | None = None,
        min_skills: int = 2,
        max_skills: int = 5,
        prompt: str = SKILL_PROMPT,
    ) -> None:
        self.complete = complete
        self.min_skills = min_skills
        self.max_skills = max_skills
        self.prompt = prompt

    def set_complete(self, complete: Callable[[str], str]) -> LLMSkillAnnotator:
        self.complete = complete
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["complete"] = None
        return state

    @staticmethod
    def parse(reply: str) -> list[str]:
        words = [re.sub(r"^[\s\-*•\d.)]+|[\s.]+$", "", w).lower() for w in re.split(r"[,\n;]", reply)]
        return list(dict.fromkeys(w for w in words if w and len(w) <= 60))

    def annotate(self, text: str, embedding: np.ndarray) -> list[str]:
        if self.complete is None:
            raise RuntimeError("LLMSkillAnnotator has no completion callable; call set_complete()")
        return self.parse(self.complete(self.prompt.format(question=text)))[: self.max_skills]


class SkillStrategy(RoutingStrategy):
    """Symbolic-MoE router. Parameters:

    annotator: a SkillAnnotator; None → EmbeddingSkillAnnotator(SKILLS, min_similarity, 2..5 skills).
    min_similarity / min_skills / max_skills: settings of that default annotator.
    prior: pseudo-count pulling the win rate toward the model's global strength.
    strength_power: exponent of the extra global-strength factor (0 = none, 1 = the paper's product).
    temperature: 0 → deterministic top-k; > 0 → seeded Gumbel sampling. seed: that sampling's seed.

    Defaults, and the data they were chosen on (so `skill`'s model7 result is in-sample for them):
    - strength_power = 0.0: by 5-fold cross-validation on the model7 routing tables
      (`python -m eval offline --train ../shared/data/routing/model7/*.json --cv 5`): mean held-out
      quality 0.570 without the strength factor, 0.563 with the paper's (strength_power = 1), as
      recorded when it was chosen (the README's current model7 run gives 0.568 at the default).
    - min_similarity = 0.3: from the cosine similarities of model7 prompts (their text only, not their
      scores) to `SKILLS` under all-MiniLM-L6-v2: median 0.36 for a prompt's nearest skill, 0.22 for its
      5th (re-measured on 1,000 model7 prompts drawn with seed 0: 0.361 and 0.220).
    - prior = 5.0: no record of how it was chosen, nor of any search over it.
    - min_skills = 2, max_skills = 5: the paper's 2–5 keywords per prompt, not tuned.
    - `SKILLS`: written from general knowledge, not from any routing table (see its comment).
    """

    name = "skill"
    learned = True
    needs_embedding = True

    def __init__(
        self,
        *,
        annotator: SkillAnnotator | None = None,
        min_similarity: float = 0.3,
        min_skills: int = 2,
        max_skills: int = 5,
        prior: float = 5.0,
        strength_power: float = 0.0,
        temperature: float = 0.0,
        seed: int = 0,
        top_k: int = 1,
    ) -> None:
        super().__init__(top_k=top_k)
        self.annotator = annotator
        self.min_similarity = min_similarity
        self.min_skills = min_skills
        self.max_skills = max_skills
        self.prior = prior
        self.strength_power = strength_power
        self.temperature = temperature
        self.seed = seed

    # -- learning -----------------------------------------------------------------------------
    def fit(self, table: RoutingTable, embeddings: np.ndarray | None = None) -> SkillStrategy:
        if len(table) == 0:
            raise ValueError("cannot fit on an empty table")
        if self.embedder is None:
            raise ValueError("strategy 'skill' needs an embedder to fit (skill keywords are embedded)")
        x = self._table_embeddings(table, embeddings)
        annotator = self.annotator or EmbeddingSkillAnnotator(
            min_similarity=self.min_similarity, min_skills=self.min_skills, max_skills=self.max_skills
        )
        self.annotator_ = annotator.fit(self.embedder)
        annotations = [self.annotator_.annotate(p, e) for p, e in zip(table.prompts, x)]
        keywords = sorted({kw for kws in annotations for kw in kws})
        index = {kw: i for i, kw in enumerate(keywords)}
        scores = table.scores  # NaN = missing = no evidence
        m = len(table.models)
        right = np.zeros((m, len(keywords)))
        seen = np.zeros((m, len(keywords)))
        for row, kws in enumerate(annotations):
            present = ~np.isnan(scores[row])
            correct = present & (np.nan_to_num(scores[row]) >= 0.5)
            for kw in kws:
                seen[:, index[kw]] += present
                right[:, index[kw]] += correct
        self.models_ = list(table.models)
        self.keywords_ = keywords
        self.keyword_index_ = index
        self.keyword_vectors_ = l2_normalise(self.embedder.encode(keywords)) if keywords else np.zeros((0, 1))
        self.right_ = right
        self.seen_ = seen
        self.strength_ = mean_quality(table)
        self._nearest_cache: dict[str, int] = {}
        return self

    # -- routing ------------------------------------------------------------------------------
    def _profile_index(self, keyword: str) -> int:
        """Exact profile skill, else the nearest one by embedding (free-form LLM keywords)."""
        hit = self.keyword_index_.get(keyword)
        if hit is not None:
            return hit
        cache = self.__dict__.setdefault("_nearest_cache", {})
        if keyword not in cache:
            if self.embedder is None:
                raise ValueError(f"skill '{keyword}' is not in the profile and no embedder is injected")
            vec = l2_normalise(self.embedder.encode([keyword]))[0]
            if len(cache) > 10_000:
                cache.clear()
            cache[keyword] = int(np.argmax(self.keyword_vectors_ @ vec))
        return cache[keyword]

    def _route_state(self, query: Query) -> tuple[dict[str, float], dict[str, Any]]:
        self.check_fitted()
        if query.embedding is None:
            query = self.with_embeddings([query])[0]
        if query.skills is not None:
            skills, annotator = list(query.skills), "llm"
        else:
            skills, annotator = self.annotator_.annotate(query.text, np.asarray(query.embedding)), self.annotator_.kind
        if not self.keywords_:
            score = self.strength_.copy()
            matched: list[str] = []
        else:
            cols = list(dict.fromkeys(self._profile_index(kw) for kw in skills))
            matched = [self.keywords_[c] for c in cols]
            right, seen = self.right_[:, cols].sum(axis=1), self.seen_[:, cols].sum(axis=1)
            score = (right + self.prior * self.strength_) / (seen + self.prior)
            if self.strength_power:
                score = score * self.strength_**self.strength_power
        if self.temperature > 0:
            # Gumbel-top-k: sampling ∝ softmax(score / T), reproducible from (seed, prompt) alone.
            gumbel = np.array([-np.log(-np.log(_hash_uniform(self.seed, query.text, m))) for m in self.models_])
            score = score / self.temperature + gumbel
        details: dict[str, Any] = {"skills": skills, "annotator": annotator}
        if matched != skills:
            details["profile_skills"] = matched
        return dict(zip(self.models_, score.tolist())), details

    def score_experts(self, query: Query, experts: Sequence[ExpertCard]) -> Mapping[str, float]:
        return self._route_state(query)[0]

    def explain(self, query: Query, experts: Sequence[ExpertCard]) -> dict[str, Any]:
        return self._route_state(query)[1]

    def score_and_explain(
        self, query: Query, experts: Sequence[ExpertCard]
    ) -> tuple[Mapping[str, float], dict[str, Any]]:
        return self._route_state(query)
