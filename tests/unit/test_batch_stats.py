"""A batch reports its own residency numbers, whatever other traffic the replica serves meanwhile.

It used to diff the replica's global counters around the batch, so a load done for a concurrent request
was counted as the batch's. Event-driven: the batch is held inside its expert call while other traffic
loads another expert; no clocks."""

import asyncio

import httpx
import pytest

from router_service.experts.fake import OffloadableFakeExpert
from router_service.serving.residency import ResidencyManager
from router_service.serving.service import RouterService

from .helpers import make_client, make_service

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class HeldExpert(OffloadableFakeExpert):
    """Signals when a call arrives and answers only once released."""

    def __init__(self, expert_id: str, **kwargs) -> None:
        super().__init__(expert_id, **kwargs)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def chat(self, request):
        self.entered.set()
        await self.release.wait()
        return await super().chat(request)


def chat(content: str, model: str = "coe") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


async def test_batch_stats_count_only_the_batchs_own_loads():
    base, _ = make_service()
    math = HeldExpert("math")
    backends = {
        "math": math,
        "text": OffloadableFakeExpert("text"),
        "general": OffloadableFakeExpert("general", loaded=True),
    }
    residency = ResidencyManager(backends, budget=2, load_window_s=0, initially_resident=["general"])
    service = RouterService(base.config, backends, base.strategies, residency=residency)
    async with make_client(service) as client:
        batch = asyncio.create_task(client.post("/v1/batch", json={"requests": [chat("sum 1"), chat("sum 2")]}))
        await math.entered.wait()  # the batch loaded math and is inside its call
        other = await client.post("/v1/chat/completions", json=chat("reverse me", model="text"))
        assert other.status_code == 200  # evicted general, loaded text: not the batch's doing
        math.release.set()
        response: httpx.Response = await batch
    stats = response.json()["stats"]
    assert (stats["loads"], stats["offloads"], stats["load_order"]) == (1, 0, ["math"])
    assert (residency.stats.loads, residency.stats.offloads) == (2, 1)
