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


def test_a_sum_is_answered_by_the_math_specialist(stack, openai_client):
    """The README's first example: routed to the trained specialist, which adds correctly via vLLM."""
    raw = openai_client.chat.completions.with_raw_response.create(
        model="coe", messages=[{"role": "user", "content": "What is 37+45?"}], max_tokens=8
    )
    completion = raw.parse()
    assert raw.headers["x-coe-experts"] == "math"
    routing = completion.model_extra["routing"]
    assert routing["experts"] == ["math"] and routing["strategy"] == "category"
    assert routing["details"]["category"] == "arithmetic"
    assert completion.choices[0].message.content.strip() == "82"
    assert completion.usage.completion_tokens >= 1
    assert completion.usage.prompt_tokens >= 1
    assert routing["cost"] > 0


def test_a_general_question_is_answered_by_the_real_generalist(stack, openai_client):
    """Outside every specialist's skill: SmolLM2-135M-Instruct answers it, through vLLM."""
    raw = openai_client.chat.completions.with_raw_response.create(
        model="coe", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=32
    )
    assert raw.headers["x-coe-experts"] == "general"
    assert "Paris" in raw.parse().choices[0].message.content


def test_served_routers_were_fitted_on_the_measured_quality_of_the_served_experts(stack):
    """The artifacts the router loaded match the table the built experts measure as, on this machine."""
    import yaml

    from zoo.routers import check_routers, quality_rows

    apps = {a["name"]: a["args"] for a in yaml.safe_load((REPO / "deployments/coe.yaml").read_text())["applications"]}
    fit = apps["coe"]["fit"]
    experts = {e: str(REPO / src["model"]) for e, src in fit["experts"].items()}
    prices = {
        e: {"input_price": src["cost"]["input_per_mtok"], "output_price": src["cost"]["output_per_mtok"]}
        for e, src in fit["experts"].items()
    }
    assert check_routers(REPO / fit["out_dir"], experts, prices)
    for expert_id, src in fit["experts"].items():  # the fit section prices and places every expert as served
        assert src["model"] == apps[f"expert-{expert_id}"]["model"]
        assert src["cost"] == apps[f"expert-{expert_id}"]["cost"]
    rows = quality_rows(experts)
    served = set(_expert_ids(stack))
    assert set(rows[0]["scores"]) == served


def test_streamed_completion_from_a_vllm_expert(stack, openai_client):
    stream = openai_client.chat.completions.create(
        model="coe", messages=[{"role": "user", "content": "Reverse the word planet"}], max_tokens=8, stream=True
    )
    chunks = list(stream)
    assert chunks[0].model_extra["routing"]["experts"] == ["strings"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "tenalp"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_direct_expert_and_models(stack, openai_client):
    models = [m.id for m in openai_client.models.list().data]
    assert models[0] == "coe" and len(models) >= 4
    raw = openai_client.chat.completions.with_raw_response.create(
        model="units", messages=[{"role": "user", "content": "Convert 3 km to m"}], max_tokens=8
    )
    assert raw.headers["x-coe-experts"] == "units"
    assert raw.parse().model_extra["routing"]["strategy"] == "direct"
    assert raw.parse().choices[0].message.content.strip() == "3000"
    assert {"math", "strings", "units", "atlas", "general"} <= set(models)


def test_cost_aware_per_request_with_high_cost_weight_avoids_the_generalist(stack, openai_client):
    completion = openai_client.chat.completions.create(
        model="coe",
        messages=[{"role": "user", "content": "Capital of Zulia?"}],
        max_tokens=8,
        extra_body={"routing": {"strategy": "cost_aware", "cost_weight": 0.9}},
    )
    routing = completion.model_extra["routing"]
    assert routing["strategy"] == "cost_aware" and routing["experts"] != ["general"]


def test_online_eval_routed_beats_every_single_expert(stack, tmp_path):
    """The whole held-out set (each skill's test split and the general questions' test split)."""
    from eval.online import run_online

    experts = _expert_ids(stack)
    results = run_online(
        f"{stack}/v1",
        REPO / "eval/data/zoo_heldout.jsonl",
        ["coe", *experts],
        tmp_path / "out",
        concurrency=8,
        max_tokens=32,
        progress=False,
    )
    print(
        "\n[e2e online eval]",
        json.dumps(
            {name: {k: run[k] for k in ("accuracy", "cost", "per_category")} for name, run in results["runs"].items()}
        ),
        json.dumps(results["oracle"]),
    )
    runs = results["runs"]
    routed = runs["coe"]["accuracy"]
    assert all(runs[name]["errors"]["count"] == 0 for name in runs), runs
    assert all(routed > runs[e]["accuracy"] for e in experts), runs
    assert routed >= 0.95 * results["oracle"]["accuracy"]
    assert runs["coe"]["cost"] < runs["general"]["cost"]


def test_client_error_on_real_stack(stack):
    r = httpx.post(f"{stack}/v1/chat/completions", json={"model": "coe", "messages": []})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
