"""Skill keywords from a served expert (Symbolic-MoE's LLM annotator), for the `skill` strategy.

The router asks the configured expert (`router.skill_annotator.expert`) through its ordinary backend,
under that expert's residency claim, greedy, with `SKILL_PROMPT`. The whole annotation, a wait for a
residency slot included, has one deadline (`timeout_s`). On a timeout, an expert error, or a reply with
no keywords, the caller gets no skills and a reason: the strategy's embedding annotator runs instead,
and the response's `routing.details` says so (`annotator`, `annotator_fallback`). Replies are kept in an
LRU cache by prompt text, so a repeated prompt costs no second call. The keywords depend only on the
prompt (greedy decoding, no other request in the prompt), as every routing input must.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from router_service.config.service import SkillAnnotatorConfig
from router_service.domain import ExpertRequest, GenerationParams, Message
from router_service.errors import CoEError
from router_service.experts.base import ExpertBackend
from router_service.routing.strategies.skill import SKILL_PROMPT, LLMSkillAnnotator
from router_service.serving.residency import Residency

log = logging.getLogger("coe.router")


class ServedSkillAnnotator:
    def __init__(self, config: SkillAnnotatorConfig, backend: ExpertBackend, residency: Residency) -> None:
        self.config = config
        self.backend = backend
        self.residency = residency
        self.max_skills = 5  # the paper's 2–5 keywords
        self._cache: collections.OrderedDict[str, tuple[str, ...]] = collections.OrderedDict()
        self._calls = 0

    def _remember(self, text: str, skills: tuple[str, ...]) -> None:
        if self.config.cache_size <= 0:
            return
        self._cache[text] = skills
        self._cache.move_to_end(text)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    async def annotate(self, text: str) -> tuple[tuple[str, ...] | None, dict[str, Any]]:
        """(skills, details for `routing.details`); skills None → use the embedding annotator."""
        expert = self.config.expert
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached, {"annotator_expert": expert, "annotator_cached": True}
        self._calls += 1
        request = ExpertRequest(
            request_id=f"skills-{self._calls}",
            messages=[Message("user", SKILL_PROMPT.format(question=text))],
            params=GenerationParams(max_tokens=self.config.max_tokens, temperature=0.0),
        )
        try:
            async with asyncio.timeout(self.config.timeout_s):
                async with self.residency.use(expert):
                    reply = await self.backend.chat(request)
        except TimeoutError:
            return None, {"annotator_fallback": f"'{expert}' did not name the skills within {self.config.timeout_s}s"}
        except CoEError as exc:
            return None, {"annotator_fallback": f"'{expert}' failed: {exc.message}"}
        except Exception as exc:  # a backend's own error that escaped its mapping: still never fail routing
            log.warning("skill annotator %s failed: %r", expert, exc)
            return None, {"annotator_fallback": f"'{expert}' failed: {type(exc).__name__}"}
        skills = tuple(LLMSkillAnnotator.parse(reply.text)[: self.max_skills])
        if not skills:
            return None, {"annotator_fallback": f"'{expert}' replied with no skill keywords"}
        self._remember(text, skills)
        details = {
            "annotator_expert": expert,
            "annotator_tokens": {"prompt": reply.prompt_tokens, "completion": reply.completion_tokens},
        }
        return skills, details
