"""Every residency wait has a deadline (#15 defect 5). Several router replicas share one budget:
tests/unit/test_shared_residency.py (defect 4)."""

from __future__ import annotations

import asyncio

import pytest

from router_service.config.service import parse_service_config
from router_service.errors import ExpertUnavailableError
from router_service.experts.fake import OffloadableFakeExpert
from router_service.routing.embedding import HashingEmbedder
from router_service.serving.assembly import build_service
from router_service.serving.residency import ResidencyManager
from tests.unit.helpers import config_dict

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def experts(loaded: str = "math", **kwargs) -> dict[str, OffloadableFakeExpert]:
    return {e: OffloadableFakeExpert(e, loaded=e == loaded, **kwargs) for e in ("math", "text", "general")}


async def test_waiting_for_a_slot_while_every_resident_expert_is_busy_ends_in_503():
    backends = experts()
    manager = ResidencyManager(backends, budget=1, load_window_s=0.0, initially_resident=["math"], wait_timeout_s=0.2)
    release = asyncio.Event()

    async def hold_math() -> None:
        async with manager.use("math"):
            await release.wait()

    holder = asyncio.create_task(hold_math())
    while manager.in_use["math"] == 0:
        await asyncio.sleep(0)
    with pytest.raises(ExpertUnavailableError) as refused:
        async with manager.use("text"):
            pass
    assert refused.value.code == "residency_timeout" and "a free slot" in refused.value.message
    assert int(refused.value.headers["retry-after"]) >= 1
    assert backends["text"].loads == 0 and manager.in_use["text"] == 0
    release.set()
    await holder
    async with manager.use("text"):  # the slot is free again: the same request now succeeds
        pass
    assert backends["text"].loaded and not backends["math"].loaded


async def test_a_load_that_does_not_land_in_time_ends_in_503_and_lands_for_the_next_request():
    backends = experts(loaded="", load_delay_s=0.5)
    manager = ResidencyManager(backends, budget=1, load_window_s=0.0, initially_resident=[], wait_timeout_s=0.1)
    with pytest.raises(ExpertUnavailableError, match="its load"):
        async with manager.use("math"):
            pass
    assert manager.in_use["math"] == 0
    manager.wait_timeout_s = 5.0
    async with manager.use("math"):  # joins the load already under way: no second load
        pass
    assert backends["math"].loads == 1


async def test_a_request_whose_expert_cannot_become_resident_falls_back_to_one_that_is():
    args = config_dict()
    args["residency"] = {"max_resident_experts": 1, "load_window_s": 0, "wait_timeout_s": 0.2}
    config = parse_service_config(args)
    backends = experts(loaded="math")  # the first expert starts resident
    service = build_service(config, backends, embedder_factory=lambda name: HashingEmbedder())
    release = asyncio.Event()

    async def hold_math() -> None:
        async with service.residency.use("math"):
            await release.wait()

    holder = asyncio.create_task(hold_math())
    while service.residency.in_use["math"] == 0:
        await asyncio.sleep(0)
    from router_service.api.schema import ChatCompletionRequest

    request = ChatCompletionRequest.model_validate(
        {"model": "coe", "messages": [{"role": "user", "content": "Reverse the word garden"}]}
    )
    outcome = await service.chat(request)
    release.set()
    await holder
    routing = outcome.response.routing
    # 'text' cannot load while the one slot is busy; the resident 'math' answers (a busy expert may
    # still take more requests: residency bounds memory, not concurrency).
    assert routing["chosen"] == ["text"] and routing["experts"] == ["math"]
    assert routing["fallback"][0] == {
        "expert": "text",
        "reason": "residency_timeout",
        "message": routing["fallback"][0]["message"],
    }
    assert backends["text"].loads == 0


class HangingOffload(OffloadableFakeExpert):
    """An engine whose offload never returns (a replica that is gone and not coming back)."""

    async def offload(self) -> None:
        await asyncio.Event().wait()


async def test_a_load_that_hangs_is_given_up_after_switch_timeout_s_and_frees_its_slot():
    backends = experts(loaded="")
    backends["math"].load_delay_s = 3600.0  # never lands
    manager = ResidencyManager(
        backends, budget=1, load_window_s=0.0, initially_resident=[], wait_timeout_s=2.0, switch_timeout_s=0.1
    )
    with pytest.raises(ExpertUnavailableError) as refused:
        async with manager.use("math"):
            pass
    assert refused.value.code == "residency_timeout"
    assert "math" in refused.value.message and "residency.switch_timeout_s" in refused.value.message
    # An engine that comes up late is put back down, and the budget is not held by the dead load.
    assert backends["math"].offloads == 1 and not manager.loading and not manager.resident
    async with manager.use("text"):
        pass
    assert backends["text"].loaded and list(manager.resident) == ["text"]


async def test_an_offload_that_hangs_fails_its_switch_and_does_not_wedge_the_budget():
    backends: dict[str, OffloadableFakeExpert] = {
        "math": HangingOffload("math", loaded=True),
        "text": OffloadableFakeExpert("text"),
        "general": OffloadableFakeExpert("general"),
    }
    manager = ResidencyManager(
        backends, budget=1, load_window_s=0.0, initially_resident=["math"], wait_timeout_s=2.0, switch_timeout_s=0.1
    )
    with pytest.raises(ExpertUnavailableError, match=r"'math': offload did not finish within 0.1 s"):
        async with manager.use("text"):  # evicts math, whose offload never returns
            pass
    assert not manager.unloading and not manager.loading and backends["text"].loads == 0
    async with manager.use("general"):  # the slot is free again
        pass
    assert list(manager.resident) == ["general"]


async def test_offloading_outside_a_switch_has_the_same_deadline():
    backends = {"math": HangingOffload("math", loaded=True), "text": OffloadableFakeExpert("text")}
    manager = ResidencyManager(backends, budget=1, initially_resident=[], switch_timeout_s=0.1)
    with pytest.raises(ExpertUnavailableError, match="residency.switch_timeout_s"):
        # What the coordinator does with experts found beyond the budget (the outer bound only keeps this
        # test from hanging should the deadline break).
        await asyncio.wait_for(manager.offload("math"), 5.0)
