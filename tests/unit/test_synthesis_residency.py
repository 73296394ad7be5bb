"""The synthesizer is an expert like the others under a memory budget (#15 defect 3): it is loaded
before it is called, its load is counted, and a streamed synthesis charges its own tokens."""

from __future__ import annotations

import json

import httpx
import pytest

from router_service.api.app import create_app
from router_service.config.service import parse_service_config
from router_service.experts.fake import OffloadableFakeExpert
from router_service.routing.embedding import HashingEmbedder
from router_service.serving.assembly import build_service
from tests.unit.helpers import config_dict

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def synthesizing_service():
    args = config_dict()
    args["aggregation"] = {"enabled": True, "method": "synthesize", "aggregator": "general", "max_experts": 2}
    args["residency"] = {"max_resident_experts": 1, "load_window_s": 0}
    config = parse_service_config(args)
    # Only the first expert starts loaded, as the deployment does; the synthesizer is offloaded.
    backends = {e.id: OffloadableFakeExpert(e.id, loaded=e.id == "math") for e in config.experts}
    service = build_service(config, backends, embedder_factory=lambda name: HashingEmbedder())
    app = create_app(lambda: service, config.server)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return client, service, backends


QUESTION = {"model": "coe", "messages": [{"role": "user", "content": "What is the sum of 2 and 3?"}]}


async def test_an_offloaded_synthesizer_is_loaded_first_and_its_load_counted():
    client, service, backends = synthesizing_service()
    async with client:
        answer = await client.post("/v1/chat/completions", json=QUESTION)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["choices"][0]["message"]["content"].startswith("[general]")
    assert body["routing"]["experts"][-1] == "general"
    assert backends["general"].loads == 1 and backends["general"].loaded
    assert "general" in service.residency.stats.load_log
    assert sum(b.loaded for b in backends.values()) == 1  # the budget held in the engines themselves


async def test_a_streamed_synthesis_reports_its_own_tokens_in_the_final_cost():
    client, service, backends = synthesizing_service()
    async with client:
        streamed = await client.post(
            "/v1/chat/completions", json={**QUESTION, "stream": True, "stream_options": {"include_usage": True}}
        )
    assert streamed.status_code == 200, streamed.text
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    first_cost = chunks[0]["routing"]["cost"]
    closing = [c for c in chunks if c.get("routing") and c["choices"] and c["choices"][0].get("finish_reason")]
    assert len(closing) == 1
    final_cost = closing[0]["routing"]["cost"]
    usage = chunks[-1]["usage"]
    # By hand, from the prices in config_dict (math, text: $0.1/Mtok; general: $1/Mtok) and the fakes'
    # one-token-a-word answers: each candidate reads 8 tokens and writes "[id] <question>", 9 tokens.
    candidates_prompt, candidates_completion = 2 * 8, 2 * 9
    assert first_cost == pytest.approx((candidates_prompt + candidates_completion) * 0.1 / 1e6)
    synth = backends["general"].requests[-1]
    synth_prompt = sum(len(m.content.split()) for m in synth.messages)
    synth_completion = usage["completion_tokens"] - candidates_completion
    assert 0 < synth_completion <= 16  # server.default_max_tokens
    assert final_cost == pytest.approx(first_cost + (synth_prompt + synth_completion) * 1.0 / 1e6)
    assert usage["prompt_tokens"] == candidates_prompt + synth_prompt
    assert backends["general"].loads == 1
