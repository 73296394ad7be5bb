"""Batch grouping, the loads bound, input order, per-item errors and residency — on fakes that count loads."""

import asyncio
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router_service.domain import ExpertRequest, GenerationParams, Message
from router_service.experts.fake import OffloadableFakeExpert
from router_service.routing.embedding import HashingEmbedder
from router_service.serving.batch import count_loads, expert_order
from router_service.serving.residency import ResidencyManager
from router_service.serving.service import RouterService

from .gates import Gate, GatedLoadExpert, eventually, until
from .helpers import config_dict, make_client, make_service

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
    work = Counter(assignments)
    order = expert_order(work, resident, last=None)
    grouped_sequence = [e for e in order for _ in range(work[e])]
    needed = set(assignments)
    loads = count_loads(grouped_sequence, resident, budget)
    assert loads == len(needed - set(resident[:budget]))  # the minimum possible
    assert loads <= count_loads(assignments, resident, budget)  # never worse than arrival order
    assert sorted(order) == sorted(needed)


def test_resident_experts_run_first_and_the_synthesizer_last():
    work = {"x": 2, "y": 1, "z": 1, "s": 3}
    assert expert_order(work, resident=["z", "s"], last="s") == ["z", "x", "y", "s"]


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


def aggregating_service(budget: int, resident: tuple[str, ...], **aggregation):
    from router_service.config.service import parse_service_config
    from router_service.serving.assembly import build_service

    args = config_dict()
    if aggregation:
        args["aggregation"] = aggregation
    config = parse_service_config(args)
    backends = {e: OffloadableFakeExpert(e, loaded=e in resident, load_delay_s=0.01) for e in EXPERTS}
    residency = ResidencyManager(backends, budget, load_window_s=0.0, initially_resident=list(resident))
    service = build_service(config, backends, embedder_factory=lambda name: HashingEmbedder())
    return RouterService(service.config, backends, service.strategies, residency=residency), backends


def needed_experts(body: dict, synthesizer: str | None = None) -> set[str]:
    needed = set()
    for item in body["results"]:
        needed |= set(item["response"]["routing"]["chosen"])
    return needed | ({synthesizer} if synthesizer else set())


async def test_top_k_items_in_a_batch_load_each_needed_expert_once():
    """#15 defect 2: grouping by the first candidate alone loaded 5 times where 2 suffice."""
    service, backends = aggregating_service(budget=1, resident=("general",))
    items = [chat(p, routing={"top_k": 2}) for p in ("sum 1", "reverse a", "sum 2", "reverse b")]
    async with make_client(service) as c:
        body = (await c.post("/v1/batch", json={"requests": items})).json()
    assert [r["status"] for r in body["results"]] == [200] * 4
    needed = needed_experts(body)
    stats = body["stats"]
    assert stats["loads"] == len(needed - {"general"}) == sum(b.loads for b in backends.values())
    assert len(stats["load_order"]) == len(set(stats["load_order"]))  # nobody loaded twice
    assert {g["expert"] for g in stats["groups"]} == needed  # the groups name every expert that ran
    assert sum(g["candidate_calls"] for g in stats["groups"]) == 8


async def test_synthesized_items_load_the_synthesizer_once_after_every_candidate():
    service, backends = aggregating_service(
        budget=1, resident=("math",), enabled=True, method="synthesize", aggregator="general", max_experts=2
    )
    items = [chat(p) for p in ("sum 1", "reverse a", "sum 2", "reverse b")]
    async with make_client(service) as c:
        body = (await c.post("/v1/batch", json={"requests": items})).json()
    assert [r["status"] for r in body["results"]] == [200] * 4
    assert all(r["response"]["choices"][0]["message"]["content"].startswith("[general]") for r in body["results"])
    needed = needed_experts(body, synthesizer="general")
    stats = body["stats"]
    assert stats["loads"] == len(needed - {"math"}) == sum(b.loads for b in backends.values())
    assert stats["load_order"][-1] == "general" and stats["load_order"].count("general") == 1
    assert stats["groups"][-1] == {
        "expert": "general",
        "size": stats["groups"][-1]["size"],
        "answered": 0,
        "candidate_calls": stats["groups"][-1]["candidate_calls"],
        "syntheses": 4,
    }
