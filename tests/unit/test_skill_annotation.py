"""Symbolic-MoE's LLM skill annotator, served: a configured expert names each prompt's skills for the
`skill` strategy, through its backend, cached, under a deadline, with the embedding annotator as the
fallback; `routing.details` says which ran and why."""

from __future__ import annotations

import pytest

from router_service.config.service import parse_service_config
from router_service.domain import ExpertCard, Query
from router_service.errors import ConfigError
from router_service.experts.fake import FakeExpertBackend
from router_service.routing.embedding import HashingEmbedder, make_embedder
from router_service.routing.strategies.base import get_strategy
from router_service.routing.strategies.skill import SkillAnnotator
from router_service.serving.assembly import build_service

from .helpers import config_dict, make_client
from .routing_fixtures import fitted_artifact, separable_table

pytestmark = pytest.mark.anyio
CARDS = [ExpertCard(id=e) for e in ("math", "text", "general")]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def is_annotation(request) -> bool:
    return request.messages[-1].content.startswith("List the 2 to 5 skills")


def annotating(reply: str):
    return lambda expert_id, request: reply if is_annotation(request) else f"[{expert_id}] answer"


def service_with(tmp_path, general: FakeExpertBackend, **annotator):
    args = config_dict(strategy="skill", artifact=str(fitted_artifact(tmp_path / "skill.joblib", strategy="skill")))
    args["router"]["skill_annotator"] = {"expert": "general", **annotator}
    config = parse_service_config(args)
    backends = {"math": FakeExpertBackend("math"), "text": FakeExpertBackend("text"), "general": general}
    return build_service(config, backends, embedder_factory=make_embedder)


def ask(content):
    return {"model": "coe", "messages": [{"role": "user", "content": content}], "max_tokens": 8}


def annotation_calls(backend: FakeExpertBackend) -> int:
    return sum(is_annotation(r) for r in backend.requests)


class ByWordAnnotator(SkillAnnotator):
    """Training-time annotator with known answers: sums are arithmetic, everything else strings."""

    def annotate(self, text, embedding):
        return ["arithmetic"] if "plus" in text else ["string manipulation"]


def test_the_skill_strategy_routes_by_the_skills_it_is_handed():
    strategy = get_strategy("skill", annotator=ByWordAnnotator()).set_embedder(HashingEmbedder(dim=256))
    table = separable_table()
    table.scores[:, 2] = 0.0  # general is never right here (0.5 would count as right for `skill`)
    strategy.fit(table)
    # A sum handed "string manipulation" goes to text, a word task handed "arithmetic" to math.
    for skill, text, expert in (
        ("string manipulation", "what is 3 plus 4", "text"),
        ("arithmetic", "reverse cat", "math"),
    ):
        decision = strategy.route(Query(text=text, skills=(skill,)), CARDS)
        assert decision.details["skills"] == [skill] and decision.details["annotator"] == "llm"
        assert max(decision.scores, key=decision.scores.get) == expert
    own = strategy.route(Query(text="what is 3 plus 4"), CARDS)
    assert own.details["annotator"] == "custom" and max(own.scores, key=own.scores.get) == "math"


async def test_the_served_expert_names_the_skills_once_per_prompt(tmp_path):
    general = FakeExpertBackend("general", answer=annotating("Arithmetic, algebra"))
    service = service_with(tmp_path, general)
    async with make_client(service) as c:
        first = (await c.post("/v1/chat/completions", json=ask("what is 12 plus 30"))).json()
        again = (await c.post("/v1/chat/completions", json=ask("what is 12 plus 30"))).json()
    details = first["routing"]["details"]
    assert details["annotator"] == "llm" and details["skills"] == ["arithmetic", "algebra"]
    assert details["annotator_expert"] == "general" and details["annotator_tokens"]["completion"] > 0
    annotation = next(r for r in general.requests if is_annotation(r))
    assert "what is 12 plus 30" in annotation.messages[-1].content and annotation.params.temperature == 0.0
    assert again["routing"]["details"]["annotator_cached"] is True
    assert annotation_calls(general) == 1  # the second request came from the cache


@pytest.mark.parametrize(
    ("general", "reason"),
    [
        (FakeExpertBackend("general", delay_s=1.0), "did not name the skills within 0.1s"),
        (FakeExpertBackend("general", fail=True), "'general' failed"),
        (FakeExpertBackend("general", answer=annotating(" , ")), "replied with no skill keywords"),
    ],
    ids=["timeout", "error", "empty"],
)
async def test_without_llm_skills_the_embedding_annotator_runs_and_says_why(tmp_path, general, reason):
    service = service_with(tmp_path, general, timeout_s=0.1)
    async with make_client(service) as c:
        response = await c.post("/v1/chat/completions", json=ask("reverse the word tomato"))
    assert response.status_code == 200
    details = response.json()["routing"]["details"]
    assert details["annotator"] == "embedding" and reason in details["annotator_fallback"]
    assert details["skills"]  # the embedding annotator's


def test_the_annotator_must_be_a_configured_expert(tmp_path):
    args = config_dict(strategy="skill", artifact=str(fitted_artifact(tmp_path / "s.joblib", strategy="skill")))
    args["router"]["skill_annotator"] = {"expert": "oracle"}
    with pytest.raises(ConfigError, match=r"router.skill_annotator.expert: 'oracle' is not a configured expert"):
        parse_service_config(args)
    args["router"]["skill_annotator"] = {"expert": "general", "timeout_s": 0}
    with pytest.raises(ConfigError, match=r"router.skill_annotator.timeout_s"):
        parse_service_config(args)


async def test_a_request_can_ask_for_the_embedding_annotator_and_cannot_ask_for_a_missing_llm(tmp_path):
    general = FakeExpertBackend("general", answer=annotating("arithmetic"))
    service = service_with(tmp_path, general)
    request = {**ask("what is 12 plus 30"), "routing": {"annotator": "embedding"}}
    async with make_client(service) as c:
        body = (await c.post("/v1/chat/completions", json=request)).json()
    assert body["routing"]["details"]["annotator"] == "embedding" and annotation_calls(general) == 0

    args = config_dict(strategy="skill", artifact=str(fitted_artifact(tmp_path / "plain.joblib", strategy="skill")))
    config = parse_service_config(args)
    plain = build_service(
        config, {e.id: FakeExpertBackend(e.id) for e in config.experts}, embedder_factory=make_embedder
    )
    async with make_client(plain) as c:
        refused = await c.post("/v1/chat/completions", json={**ask("hi"), "routing": {"annotator": "llm"}})
        unknown = await c.post("/v1/chat/completions", json={**ask("hi"), "routing": {"annotator": "oracle"}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "routing.annotator"
    assert unknown.status_code == 400 and "annotator" in str(unknown.json()["error"])
