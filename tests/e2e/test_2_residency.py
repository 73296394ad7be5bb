"""Real vLLM CPU experts under a memory budget below the expert count: a mixed batch is answered
correctly, grouped by expert, and the loads are reported (each needed expert loaded at most once)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from router_service.data.loaders import read_jsonl
from router_service.routing.grading import is_correct

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def budget_stack(stacks):
    return stacks.ensure("deployments/coe-residency.yaml")


def test_mixed_batch_with_fewer_resident_experts_than_experts(budget_stack):
    health = httpx.get(f"{budget_stack}/health", timeout=30).json()
    assert len(health["resident"]) == 2
    rows = [row for _, row in read_jsonl(REPO / "eval/data/zoo_heldout.jsonl")]
    rows = [row for row in rows if row["category"] != "general"]  # this stack serves the four specialists
    picks = {}
    for row in rows:
        picks.setdefault(row["category"], [])
        if len(picks[row["category"]]) < 2:
            picks[row["category"]].append(row)
    mixed = [row for i in range(2) for skill in sorted(picks) for row in [picks[skill][i]]]  # interleaved
    requests = [
        {"model": "coe", "messages": [{"role": "user", "content": r["prompt"]}], "max_tokens": 16} for r in mixed
    ]
    response = httpx.post(f"{budget_stack}/v1/batch", json={"requests": requests}, timeout=1200)
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(mixed)))
    assert all(r["status"] == 200 for r in results), results
    answers = [r["response"]["choices"][0]["message"]["content"] for r in results]
    correct = sum(is_correct(a, row["answer"], "exact") for a, row in zip(answers, mixed))
    assert correct >= len(mixed) - 1, list(zip(answers, [r["answer"] for r in mixed]))
    stats = body["stats"]
    needed = {r["experts"][0] for r in results}
    resident_before = set(health["resident"])
    assert stats["loads"] == len(needed - resident_before)  # each needed expert loaded once, no more
    assert len(stats["load_order"]) == len(set(stats["load_order"]))
    print("\n[e2e residency] batch stats:", json.dumps(stats))
