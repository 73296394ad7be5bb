"""The service with a fitted artifact: routing, explanation, and artifacts fitted on other experts."""

import logging

import pytest

from router_service.serving.assembly import build_service
from router_service.config.service import parse_service_config
from router_service.routing.embedding import make_embedder
from router_service.errors import ConfigError
from router_service.experts.fake import FakeExpertBackend

from .helpers import config_dict, make_client
from .routing_fixtures import fitted_artifact

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def service_with(artifact, experts=("math", "text", "general"), **router):
    args = config_dict(strategy="category", artifact=str(artifact), **router)
    args["experts"] = [e for e in args["experts"] if e["id"] in experts]
    if "general" not in experts:
        args["router"]["default_expert"] = None
    config = parse_service_config(args)
    backends = {e.id: FakeExpertBackend(e.id) for e in config.experts}
    return build_service(config, backends, embedder_factory=make_embedder)


def ask(content, **kw):
    return {"model": "coe", "messages": [{"role": "user", "content": content}], **kw}


async def test_category_artifact_routes_and_explains(tmp_path):
    service = service_with(fitted_artifact(tmp_path / "c.joblib"))
    async with make_client(service) as c:
        math = (await c.post("/v1/chat/completions", json=ask("what is 12 plus 30 sum the numbers"))).json()
        word = (await c.post("/v1/chat/completions", json=ask("reverse the word tomato and spell it backwards"))).json()
    assert math["routing"]["experts"] == ["math"] and word["routing"]["experts"] == ["text"]
    assert math["routing"]["details"]["category"] == "math"
    assert 0.5 <= math["routing"]["details"]["confidence"] <= 1.0
    assert word["routing"]["details"]["category"] == "words"


async def test_removed_expert_goes_to_next_best_and_response_says_so(tmp_path):
    service = service_with(fitted_artifact(tmp_path / "c.joblib"), experts=("text", "general"))
    async with make_client(service) as c:
        body = (await c.post("/v1/chat/completions", json=ask("what is 12 plus 30 sum the numbers"))).json()
    assert body["routing"]["experts"][0] in ("text", "general")
    assert body["routing"]["fallback"][0]["wanted"] == "math"
    assert "not configured" in body["routing"]["fallback"][0]["reason"]


async def test_added_expert_is_never_routed_to_and_warned_about(tmp_path, caplog):
    artifact = fitted_artifact(tmp_path / "c.joblib", models=["math", "text"])
    with caplog.at_level(logging.WARNING):
        service = service_with(artifact)
    assert "general" in caplog.text and "not routed to until the artifact is refitted" in caplog.text
    async with make_client(service) as c:
        for prompt in ("what is 1 plus 2 sum the numbers", "reverse the word cat", "hello there", "x y z"):
            body = (await c.post("/v1/chat/completions", json=ask(prompt))).json()
            assert "general" not in body["routing"]["chosen"]


def test_artifact_strategy_must_match_config(tmp_path):
    artifact = fitted_artifact(tmp_path / "s.joblib", strategy="skill")
    with pytest.raises(ConfigError, match="router.strategy"):
        service_with(artifact)


def test_missing_artifact_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="router.artifact"):
        service_with(tmp_path / "nope.joblib")


def test_learned_strategy_without_artifact_is_a_config_error():
    args = config_dict(strategy="cost_aware")
    with pytest.raises(ConfigError, match="router.artifact"):
        build_service(parse_service_config(args), {e: FakeExpertBackend(e) for e in ("math", "text", "general")})
