"""One memory budget across router replicas (#15 defect 4): two services, as two router replicas
would, lease experts from one coordinator, and the engines' own timelines never show more loaded
experts than the budget. The coordinator here is the core `LeaseBook`, called directly; on Serve it
sits behind a deployment handle (tests/serve/test_residency_serve.py)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from router_service.api.schema import ChatCompletionRequest
from router_service.config.service import parse_service_config
from router_service.errors import ExpertUnavailableError
from router_service.experts.fake import OffloadableFakeExpert
from router_service.routing.embedding import HashingEmbedder
from router_service.serving.assembly import build_service
from router_service.serving.residency import ResidencyManager
from router_service.serving.shared_residency import LeaseBook, SharedResidency
from tests.unit.helpers import config_dict

pytestmark = pytest.mark.anyio
EXPERTS = ("math", "text", "general")


@pytest.fixture
def anyio_backend():
    return "asyncio"


class LocalCoordinator:
    """The coordinator's interface over a LeaseBook in this process. Like a remote call, an acquire
    goes on in the coordinator when its caller stops waiting (its own task, shielded)."""

    def __init__(self, book: LeaseBook) -> None:
        self.book = book

    async def acquire(self, expert_id: str, ttl_s: float, lease_id: str) -> dict[str, Any]:
        return await asyncio.shield(asyncio.ensure_future(self.book.acquire(expert_id, ttl_s, lease_id)))

    async def release(self, lease_id: str) -> dict[str, Any]:
        return self.book.release(lease_id)

    async def state(self) -> dict[str, Any]:
        return self.book.state()


def most_loaded_at_once(engines: dict[str, OffloadableFakeExpert]) -> int:
    """From the engines' own timelines: +1 when one starts loading, -1 when it has offloaded."""
    events = sorted((t, 1 if kind == "loaded" else -1) for engine in engines.values() for kind, t in engine.timeline)
    # At equal times count the offload first: an offload that ends as the next load starts is no overlap.
    events.sort(key=lambda e: (e[0], e[1]))
    return max(itertools.accumulate(delta for _, delta in events))


def replicas(book: LeaseBook, engines, n: int = 2, **residency: Any):
    args = config_dict()
    args["residency"] = {"max_resident_experts": 1, "load_window_s": 0.01, **residency}
    config = parse_service_config(args)
    services = []
    for _ in range(n):
        shared = SharedResidency(
            LocalCoordinator(book),
            managed=EXPERTS,
            budget=1,
            wait_timeout_s=config.residency.wait_timeout_s,
            lease_ttl_s=config.residency.lease_ttl_s,
        )
        services.append(
            build_service(config, engines, embedder_factory=lambda name: HashingEmbedder(), residency=shared)
        )
    return services


def ask(model: str, text: str = "please sum 2 and 3") -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8}
    )


async def test_two_router_replicas_never_hold_more_experts_than_the_budget_between_them():
    engines = {e: OffloadableFakeExpert(e, loaded=e == "math", load_delay_s=0.02, delay_s=0.01) for e in EXPERTS}
    book = LeaseBook(ResidencyManager(engines, budget=1, load_window_s=0.01, initially_resident=["math"]))
    first, second = replicas(book, engines)
    # Each replica alone would think it may load one expert: both together must still hold one.
    requests = [
        service.chat(ask(model))
        for model in ("math", "text", "general", "text", "math", "general") * 4
        for service in (first, second)
    ]
    outcomes = await asyncio.gather(*requests, return_exceptions=True)
    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert all(o.response.routing["experts"] == [o.response.model] for o in outcomes)
    assert most_loaded_at_once(engines) == 1
    # Both replicas' requests started loads, and the coordinator counted every one of them once.
    total = sum(e.loads for e in engines.values())
    assert first.residency.stats.loads + second.residency.stats.loads == total == book.manager.stats.loads
    # /health reports the application's loads (the coordinator's), whichever replica answers it.
    assert (await first.health())["residency"]["loads"] == total == (await second.health())["residency"]["loads"]
    assert book.leases == {}


async def test_without_the_coordinator_two_replicas_each_keep_a_budget_and_exceed_it_together():
    """Defect 4 as it was: each replica's own manager. The check above would catch it."""
    engines = {e: OffloadableFakeExpert(e, loaded=False, load_delay_s=0.02, delay_s=0.05) for e in EXPERTS}
    args = config_dict()
    args["residency"] = {"max_resident_experts": 1, "load_window_s": 0.01}
    config = parse_service_config(args)
    first, second = (
        build_service(
            config,
            engines,
            embedder_factory=lambda name: HashingEmbedder(),
            residency=ResidencyManager(engines, budget=1, load_window_s=0.01, initially_resident=[]),
        )
        for _ in range(2)
    )
    await asyncio.gather(first.chat(ask("math")), second.chat(ask("text")))
    assert most_loaded_at_once(engines) == 2


async def test_a_lease_whose_holder_died_expires_so_the_expert_can_be_evicted():
    now = [0.0]
    engines = {e: OffloadableFakeExpert(e, loaded=e == "math") for e in EXPERTS}
    book = LeaseBook(
        ResidencyManager(engines, budget=1, load_window_s=0.0, initially_resident=["math"], wait_timeout_s=0.2),
        clock=lambda: now[0],
    )
    held = await book.acquire("math", ttl_s=30.0)  # its holder never gives it back
    assert held["lease"] and book.manager.in_use["math"] == 1
    with pytest.raises(ExpertUnavailableError, match="a free slot"):
        await book.acquire("text", ttl_s=30.0)
    now[0] = 31.0
    await book.acquire("text", ttl_s=30.0)  # the dead holder's lease expired: math is evicted
    assert engines["text"].loaded and not engines["math"].loaded


async def test_a_coordinator_that_does_not_answer_in_time_is_a_503_with_retry_after():
    class Silent:
        released: list[str] = []

        async def acquire(self, expert_id: str, ttl_s: float, lease_id: str) -> dict[str, Any]:
            await asyncio.sleep(3600)
            raise AssertionError

        async def release(self, lease_id: str) -> dict[str, Any]:
            self.released.append(lease_id)
            return {"resident": []}

        async def state(self) -> dict[str, Any]:
            raise AssertionError

    coordinator = Silent()
    shared = SharedResidency(coordinator, managed=EXPERTS, budget=1, wait_timeout_s=0.05, lease_ttl_s=60)
    shared.wait_timeout_s = -9.9  # the client's margin over the coordinator's own deadline is 10 s
    with pytest.raises(ExpertUnavailableError) as refused:
        async with shared.use("text"):
            pass
    assert refused.value.code == "residency_timeout" and "retry-after" in refused.value.headers
    await asyncio.sleep(0.01)
    assert len(coordinator.released) == 1  # the claim it stopped waiting for is given back


async def test_a_caller_that_stops_waiting_for_a_load_leaves_no_claim_behind():
    """Seen on the CPU zoo: a top_k=2 request's fan-out deadline (30 s) cancelled the wait for a load
    (50 s); the coordinator then granted the claim to nobody, and the expert could never be evicted."""
    engines = {e: OffloadableFakeExpert(e, loaded=e == "math", load_delay_s=0.2) for e in EXPERTS}
    book = LeaseBook(ResidencyManager(engines, budget=1, load_window_s=0.0, initially_resident=["math"]))
    shared = SharedResidency(LocalCoordinator(book), managed=EXPERTS, budget=1, wait_timeout_s=5, lease_ttl_s=600)

    async def call_text() -> None:
        async with shared.use("text"):
            raise AssertionError("the caller gave up before the load landed")

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(call_text(), 0.05)  # the caller's deadline, shorter than the load
    await asyncio.sleep(0.4)  # the load lands meanwhile
    assert engines["text"].loaded
    assert book.leases == {} and book.manager.in_use["text"] == 0, "a claim was granted to nobody"
    async with shared.use("general"):  # so text can be evicted at once
        pass
    assert engines["general"].loaded and not engines["text"].loaded


async def test_a_restarted_coordinator_takes_the_engines_state_and_offloads_beyond_the_budget():
    engines = {e: OffloadableFakeExpert(e, loaded=e != "general") for e in EXPERTS}
    manager = ResidencyManager(engines, budget=1, load_window_s=0.0, initially_resident=[])
    extra = manager.adopt(e for e in EXPERTS if engines[e].loaded)
    assert manager.resident_ids() == ["math"] and extra == ["text"]


async def test_an_expert_added_while_claims_wait_comes_under_the_same_budget():
    """The split form's coordinator takes a new expert application in place: a claim already waiting
    and the new expert's claims share one manager, so the engines never hold more than the budget."""
    engines = {e: OffloadableFakeExpert(e, loaded=e == "math", load_delay_s=0.05) for e in ("math", "text")}
    manager = ResidencyManager(engines, budget=1, load_window_s=0.0, initially_resident=["math"])
    book = LeaseBook(manager)
    held = await book.acquire("math", ttl_s=60)
    waiting = asyncio.create_task(book.acquire("text", ttl_s=60))  # waits for math's slot
    await asyncio.sleep(0.01)
    engines["poetry"] = OffloadableFakeExpert("poetry", loaded=True)  # deployed loaded: beyond the budget
    engines["general"] = OffloadableFakeExpert("general", loaded=False)
    assert manager.set_experts(engines, loaded=["poetry"]) == ["poetry"]
    await engines["poetry"].offload()  # what the coordinator does with the returned experts
    book.release(held["lease"])
    text = await waiting
    book.release(text["lease"])
    for expert_id in ("general", "poetry", "math"):
        book.release((await book.acquire(expert_id, ttl_s=60))["lease"])
    # Poetry's span from its deployment to the coordinator's offload is the deployment's, not a load.
    del engines["poetry"].timeline[:2]
    assert most_loaded_at_once(engines) == 1
    assert engines["general"].loads == engines["poetry"].loads == 1
