"""Batch grouping, the loads bound, input order, per-item errors and residency — on fakes that count loads."""

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_service.domain import ExpertRequest, GenerationParams, Message
from router_service.experts.fake import OffloadableFakeExpert
from router_service.serving.batch import count_loads, group_by_expert, order_groups
from router_service.serving.residency import ResidencyManager
from router_service.serving.service import RouterService

from .gates import Gate, GatedLoadExpert, eventually, until
from .helpers import make_client, make_service

pytestmark = pytest.mark.anyio
EXPERTS = ["math", "text", "general"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=40),
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=2, unique=True),
)
def test_grouped_order_loads_each_needed_expert_at_most_once(assignments, resident):
    budget = 2
    groups = order_groups(group_by_expert(assignments), resident)
    grouped_sequence = [e for e, idx in groups for _ in idx]
    needed = set(assignments)
    loads = count_loads(grouped_sequence, resident, budget)
    assert loads == len(needed - set(resident[:budget]))  # the minimum possible
    assert loads <= count_loads(assignments, resident, budget)  # never worse than arrival order
    assert sorted(i for _, idx in groups for i in idx) == list(range(len(assignments)))


def test_resident_groups_run_first():
    groups = order_groups(group_by_expert(["x", "y", "x", "z"]), resident=["z"])
    assert [e for e, _ in groups] == ["z", "x", "y"]


def offloadable_service(budget, resident=("general",), load_delay_s=0.01):
    service, _ = make_service()
    backends = {e: OffloadableFakeExpert(e, loaded=e in resident, load_delay_s=load_delay_s) for e in EXPERTS}
    residency = ResidencyManager(backends, budget, load_window_s=0.02, initially_resident=list(resident))
    service = RouterService(service.config, backends, service.strategies, residency=residency)
    return service, backends


def chat(content, **kw):
    return {"model": "coe", "messages": [{"role": "user", "content": content}], **kw}


async def test_batch_keeps_input_order_groups_and_loads_each_expert_once():
    service, backends = offloadable_service(budget=1)
    prompts = ["sum 1", "reverse a", "sum 2", "story", "reverse b", "sum 3", "story 2", "reverse c"]
    async with make_client(service) as c:
        r = await c.post("/v1/batch", json={"requests": [chat(p) for p in prompts]})
    body = r.json()
    assert r.status_code == 200
    results = body["results"]
    assert [x["index"] for x in results] == list(range(len(prompts)))
    for prompt, item in zip(prompts, results):
        assert item["status"] == 200
        assert item["response"]["choices"][0]["message"]["content"].endswith(prompt)
    stats = body["stats"]
    assert stats["loads"] == 2  # math and text; general was resident
    assert sorted(stats["load_order"]) == ["math", "text"]
    assert [g["expert"] for g in stats["groups"]][0] == "general"
    assert sum(b.loads for b in backends.values()) == 2


async def test_one_bad_item_does_not_fail_the_batch():
    service, _ = make_service()
    items = [chat("sum 1"), {"model": "coe"}, chat("x", model="ghost"), chat("reverse", max_tokens=0)]
    async with make_client(service) as c:
        r = await c.post("/v1/batch", json={"requests": items})
    results = r.json()["results"]
    assert [x["status"] for x in results] == [200, 400, 404, 400]
    assert results[1]["error"]["param"] == "messages"
    assert results[2]["error"]["code"] == "model_not_found"


async def test_jsonl_batch_with_a_broken_line():
    service, _ = make_service()
    body = json.dumps(chat("sum 1")) + "\n{broken\n" + json.dumps(chat("reverse"))
    async with make_client(service) as c:
        r = await c.post("/v1/batch", content=body, headers={"content-type": "application/jsonl"})
    assert [x["status"] for x in r.json()["results"]] == [200, 400, 200]
    assert "line 2" in r.json()["results"][1]["error"]["message"]


async def test_bad_batch_envelopes_are_400():
    service, _ = make_service()
    async with make_client(service) as c:
        for payload in ({"requests": []}, {"nope": 1}, [1, 2]):
            r = await c.post("/v1/batch", json=payload)
            assert r.status_code == 400 and r.json()["error"]["param"] == "requests"
        r = await c.post("/v1/batch", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 400


def gated_load_service(gate, budget):
    """math's load is held at `gate`; general is resident; no load window (nothing waits on the clock)."""
    service, _ = make_service()
    backends = {
        "math": GatedLoadExpert("math", gate),
        "text": OffloadableFakeExpert("text"),
        "general": OffloadableFakeExpert("general", loaded=True),
    }
    residency = ResidencyManager(backends, budget, load_window_s=0.0, initially_resident=["general"])
    return RouterService(service.config, backends, service.strategies, residency=residency), backends, residency


async def test_concurrent_requests_share_one_load():
    """Five concurrent requests for an offloaded expert all wait on one load, which runs once.

    Bug 5: event-driven. The load is held at a gate until all five requests are known to be waiting
    for it (claims counted by the residency manager), so "concurrent" is arranged, not hoped for.
    """
    gate = Gate()
    service, backends, residency = gated_load_service(gate, budget=1)
    async with make_client(service) as c:
        posts = [asyncio.create_task(c.post("/v1/chat/completions", json=chat("sum it"))) for _ in range(5)]
        # All five have claimed math, and its load has reached the gate (either may happen first).
        assert await eventually(lambda: residency.in_use["math"] == 5 and gate.waiting == 1), (
            "all five requests should be waiting on one load of math"
        )
        assert backends["math"].load_started == 1  # one load, still in progress
        assert not any(p.done() for p in posts)
        gate.open()
        results = await asyncio.gather(*posts)
    assert all(r.status_code == 200 for r in results)
    assert backends["math"].loads == 1 and backends["general"].offloads == 1
    assert residency.stats.loads == 1


async def test_resident_expert_is_not_held_back_by_a_load():
    """A request for a resident expert is served while another expert's load is still in progress.

    Bug 5: no wall clock. math's load is held at a gate for the whole request to general, so general
    finishing at all proves it did not wait behind the load (a regression fails fast, it cannot hang).
    """
    gate = Gate()
    backends = {
        "math": GatedLoadExpert("math", gate),
        "text": OffloadableFakeExpert("text"),
        "general": OffloadableFakeExpert("general", loaded=True),
    }
    manager = ResidencyManager(backends, budget=2, load_window_s=0.0, initially_resident=["general"])
    req = ExpertRequest("r", [Message("user", "x")], GenerationParams(max_tokens=4))

    async def call(expert):
        async with manager.use(expert):
            return await backends[expert].chat(req)

    loading = asyncio.create_task(call("math"))
    assert await until(lambda: gate.waiting == 1), "math's load should have started"
    served = asyncio.create_task(call("general"))
    assert await until(served.done), "the resident expert's request waited for another expert's load"
    assert served.result().text == "[general] x"
    assert not loading.done() and "math" in manager.loading and not backends["math"].loaded
    gate.open()
    assert (await loading).text == "[math] x"
    assert manager.stats.loads == 1 and backends["general"].loaded


async def test_budget_is_never_exceeded():
    backends = {e: OffloadableFakeExpert(e, load_delay_s=0.01) for e in EXPERTS}
    manager = ResidencyManager(backends, budget=1, load_window_s=0.0, initially_resident=[])
    req = ExpertRequest("r", [Message("user", "x")], GenerationParams(max_tokens=4))

    async def call(expert):
        async with manager.use(expert):
            assert sum(b.loaded for b in backends.values()) <= 1
            return await backends[expert].chat(req)

    await asyncio.gather(*(call(e) for e in EXPERTS * 4))
    assert manager.stats.loads >= 3
