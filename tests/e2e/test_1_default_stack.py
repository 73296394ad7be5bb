"""The real stack end to end: Serve → router → vLLM CPU experts → HTTP, driven by the official openai client."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _expert_ids(stack) -> list[str]:
    return [m["id"] for m in httpx.get(f"{stack}/v1/models").json()["data"] if m["id"] != "coe"]


def test_routed_completion_from_a_vllm_expert(stack, openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="coe", messages=[{"role": "user", "content": "What is 12+30?"}], max_tokens=8)
    completion = raw.parse()
    assert raw.headers["x-coe-experts"] == "math"
    routing = completion.model_extra["routing"]
    assert routing["experts"] == ["math"] and routing["strategy"] == "category"
    assert routing["details"]["category"] == "arithmetic"
    assert completion.choices[0].message.content.strip() == "42"  # the trained specialist, via vLLM
    assert completion.usage.completion_tokens >= 1
    assert completion.usage.prompt_tokens >= 1
    assert routing["cost"] > 0


def test_streamed_completion_from_a_vllm_expert(stack, openai_client):
    stream = openai_client.chat.completions.create(
        model="coe", messages=[{"role": "user", "content": "Reverse the word planet"}], max_tokens=8,
        stream=True)
    chunks = list(stream)
    assert chunks[0].model_extra["routing"]["experts"] == ["strings"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "tenalp"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_direct_expert_and_models(stack, openai_client):
    models = [m.id for m in openai_client.models.list().data]
    assert models[0] == "coe" and len(models) >= 4
    raw = openai_client.chat.completions.with_raw_response.create(
        model="units", messages=[{"role": "user", "content": "Convert 3 km to m"}], max_tokens=8)
    assert raw.headers["x-coe-experts"] == "units"
    assert raw.parse().model_extra["routing"]["strategy"] == "direct"
    assert raw.parse().choices[0].message.content.strip() == "3000"


def test_cost_aware_per_request_with_high_cost_weight_avoids_the_generalist(stack, openai_client):
    completion = openai_client.chat.completions.create(
        model="coe", messages=[{"role": "user", "content": "Capital of Zulia?"}], max_tokens=8,
        extra_body={"routing": {"strategy": "cost_aware", "cost_weight": 0.9}})
    routing = completion.model_extra["routing"]
    assert routing["strategy"] == "cost_aware" and routing["experts"] != ["general"]


def test_online_eval_routed_beats_every_single_expert(stack, tmp_path):
    from eval.online import run_online

    dataset = tmp_path / "sample.jsonl"
    rows = [line for line in (REPO / "eval/data/zoo_heldout.jsonl").read_text().splitlines() if line.strip()]
    by_skill: dict[str, list[str]] = {}
    for line in rows:
        by_skill.setdefault(json.loads(line)["category"], []).append(line)
    dataset.write_text("\n".join(line for lines in by_skill.values() for line in lines[:8]))
    experts = _expert_ids(stack)
    results = run_online(f"{stack}/v1", dataset, ["coe", *experts], tmp_path / "out", concurrency=8,
                         max_tokens=16, progress=False)
    routed = results["runs"]["coe"]["accuracy"]
    best_single = max(results["runs"][e]["accuracy"] for e in experts)
    assert results["runs"]["coe"]["errors"]["count"] == 0
    assert routed > best_single, results["runs"]
    assert routed >= 0.95 * results["oracle"]["accuracy"]


def test_client_error_on_real_stack(stack):
    r = httpx.post(f"{stack}/v1/chat/completions", json={"model": "coe", "messages": []})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
