"""The vLLM backend takes one load or offload at a time. A residency manager that gave up on a slow
engine start (residency.switch_timeout_s) offloads next; that offload must find the engine the start
brings up, not return before it exists. vLLM itself is not needed: `start`/`shutdown` are stood in for."""

from __future__ import annotations

import asyncio
import threading

import pytest

from deployments.vllm_backend import VLLMEngineBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class SlowStart(VLLMEngineBackend):
    def __init__(self) -> None:
        super().__init__("math", "models/zoo/math")
        self.proceed = threading.Event()
        self.shutdowns = 0
        self.starts = 0

    def start(self) -> None:  # runs in a thread, as the real one does
        self.starts += 1
        self.proceed.wait(10.0)
        self.engine = object()

    def shutdown(self) -> None:
        self.engine = None
        self.shutdowns += 1


async def test_an_offload_after_a_given_up_load_shuts_down_the_engine_that_start_brings_up():
    backend = SlowStart()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(backend.load(), 0.05)  # the caller's deadline passes mid-start
    offload = asyncio.ensure_future(backend.offload())
    await asyncio.sleep(0.05)
    assert not offload.done(), "the offload must wait for the start under way"
    backend.proceed.set()
    await asyncio.wait_for(offload, 10.0)
    assert backend.engine is None and backend.shutdowns == 1 and not backend.is_loaded()


async def test_a_load_after_a_given_up_load_joins_the_start_under_way():
    backend = SlowStart()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(backend.load(), 0.05)
    again = asyncio.ensure_future(backend.load())
    await asyncio.sleep(0.05)
    backend.proceed.set()
    await asyncio.wait_for(again, 10.0)
    assert backend.is_loaded() and backend.starts == 1  # one engine, not a second one beside it


async def test_load_then_offload_in_turn():
    backend = SlowStart()
    backend.proceed.set()
    await backend.load()
    assert backend.is_loaded()
    await backend.offload()
    assert not backend.is_loaded() and backend.shutdowns == 1
