"""vote and synthesize aggregators, and the per-expert deadline, through the service with fakes."""

import json

import pytest

from router_service.domain import ExpertReply, ExpertRequest, GenerationParams, Message
from router_service.serving.aggregation.synthesize import render_prompt
from router_service.serving.aggregation.vote import VoteAggregator

from .helpers import make_client, make_service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def request():
    return ExpertRequest("r", [Message("user", "q")], GenerationParams(max_tokens=8))


async def test_vote_majority_over_normalised_answers():
    replies = [ExpertReply("a", "42"), ExpertReply("b", " 42.0 "), ExpertReply("c", "41")]
    result = await VoteAggregator().aggregate(request(), replies, {"a": 0.1, "b": 0.2, "c": 0.9})
    assert result.text.strip() in ("42", "42.0")
    assert result.details["support"] == 2
    assert result.details["winner"] == "b"  # best-scored among the majority


async def test_vote_tie_goes_to_best_routing_score():
    replies = [ExpertReply("a", "Paris"), ExpertReply("b", "Lyon")]
    result = await VoteAggregator().aggregate(request(), replies, {"a": 0.3, "b": 0.7})
    assert result.text == "Lyon" and result.details["winner"] == "b"


def answers(mapping):
    return lambda expert_id, req: mapping[expert_id]


async def test_service_vote_over_top_k():
    fixed = answers({"math": "B", "text": "(b)", "general": "C"})
    service, backends = make_service(fakes={e: {"answer": fixed} for e in ("math", "text", "general")})
    async with make_client(service) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "coe", "messages": [{"role": "user", "content": "x"}], "routing": {"top_k": 3}},
        )
    body = r.json()
    assert body["choices"][0]["message"]["content"] in ("B", "(b)")
    assert body["routing"]["aggregation"]["support"] == 2
    assert set(body["routing"]["answered"]) == {"math", "text", "general"}


async def test_deadline_drops_slow_expert_and_says_why():
    fakes = {
        "math": {"answer": answers({"math": "7"})},
        "text": {"delay_s": 5, "answer": answers({"text": "8"})},
        "general": {"answer": answers({"general": "7"})},
    }
    service, backends = make_service(fakes=fakes, top_k=3)
    service.config.aggregation.deadline_s = 0.3
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json={"model": "coe", "messages": [{"role": "user", "content": "x"}]})
    routing = r.json()["routing"]
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "7"
    assert routing["dropped"] == [
        {"expert": "text", "reason": "deadline", "message": "no answer within the 0.3s aggregation deadline"}
    ]
    assert backends["text"].cancelled == 1


async def test_failed_candidate_is_dropped_with_its_error():
    service, _ = make_service(fakes={"math": {"fail": True}}, top_k=3)
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json={"model": "coe", "messages": [{"role": "user", "content": "x"}]})
    dropped = r.json()["routing"]["dropped"]
    assert dropped[0]["expert"] == "math" and dropped[0]["reason"] == "expert_failed"


def synth_service(**kw):
    def general_answer(expert_id, req):
        prompt = req.messages[-1].content
        return "SYNTH:" + ("1. a" in prompt and "2. b" in prompt and "Query: q" in prompt and "ok" or "bad")

    fakes = {
        "math": {"answer": answers({"math": "a"})},
        "text": {"answer": answers({"text": "b"})},
        "general": {"answer": general_answer},
    }
    service, backends = make_service(fakes=fakes, **kw)
    service.config.aggregation.method = "synthesize"
    service.config.aggregation.aggregator = "general"
    from router_service.serving.aggregation import make_aggregator

    service.aggregator = make_aggregator(service.config.aggregation, service.backends, 2.0)
    return service, backends


async def test_synthesize_uses_aggregator_expert_with_candidates():
    service, backends = synth_service(default_expert="general")
    async with make_client(service) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={
                "model": "coe",
                "messages": [{"role": "user", "content": "q sum reverse"}],
                "routing": {"top_k": 2, "strategy": "keyword"},
            },
        )
    body = r.json()
    assert body["routing"]["aggregation"]["method"] == "synthesize"
    assert body["choices"][0]["message"]["content"] == "SYNTH:ok"
    assert body["routing"]["experts"][-1] == "general"
    assert backends["general"].calls == 1


async def test_synthesize_streams_the_aggregator_output():
    service, _ = synth_service(default_expert="general")
    async with make_client(service) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={
                "model": "coe",
                "messages": [{"role": "user", "content": "q"}],
                "stream": True,
                "routing": {"top_k": 2, "strategy": "keyword"},
            },
        )
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("SYNTH:")
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 1
    assert chunks[0]["routing"]["aggregation"]["aggregator"] == "general"


def test_synthesis_prompt_template():
    prompt = render_prompt("R:\n{responses}\nQ: {question}", "why?", [ExpertReply("a", " x "), ExpertReply("b", "y")])
    assert prompt == "R:\n1. x\n2. y\nQ: why?"


async def test_bug2_max_experts_above_the_expert_count_is_clamped_not_a_client_error(caplog):
    """Bug 2: aggregation on with `max_experts` above the number of experts made every routed request a
    400 `routing.top_k`. It is the operator's setting: the service asks every expert and warns once."""
    from router_service.config.service import parse_service_config
    from router_service.experts.fake import FakeExpertBackend
    from router_service.routing.embedding import HashingEmbedder
    from router_service.serving.assembly import build_service

    from .helpers import config_dict

    config = parse_service_config({**config_dict(), "aggregation": {"enabled": True, "max_experts": 5}})
    backends = {e.id: FakeExpertBackend(e.id) for e in config.experts}
    with caplog.at_level("WARNING", logger="coe.router"):
        service = build_service(config, backends, embedder_factory=lambda name: HashingEmbedder())
    assert any("aggregation.max_experts is 5 but only 3 experts" in r.getMessage() for r in caplog.records)
    async with make_client(service) as c:
        r = await c.post("/v1/chat/completions", json={"model": "coe", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200, r.text
    assert set(r.json()["routing"]["answered"]) == {"math", "text", "general"}
