"""An expert replica offloads only once the calls it is running are answered (deployments/expert_shell.py).

The residency coordinator normally offloads only experts nobody leases; these tests are the case where
a lease outlived the coordinator's memory of it (a coordinator restart, a call past its lease's time
to live), so the offload reaches an engine that is still answering.
"""

import asyncio
import logging

import pytest

from deployments.expert_shell import ExpertShell
from router_service.domain import ExpertRequest, GenerationParams, Message
from router_service.experts.fake import OffloadableFakeExpert

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Engine(OffloadableFakeExpert):
    """Records how many calls were running when its memory was freed."""

    def __init__(self, **kwargs) -> None:
        super().__init__("e", loaded=True, **kwargs)
        self.running_at_offload: list[int] = []
        self.on_offload = lambda: None

    async def offload(self) -> None:
        self.running_at_offload.append(self.in_flight)
        self.on_offload()
        await super().offload()


class Shell(ExpertShell):
    def __init__(self, engine: Engine, timeout_s: float) -> None:
        self.backend = engine
        self.description = {"id": "e", "model": "m", "timeout_s": timeout_s}


def request() -> ExpertRequest:
    return ExpertRequest("r", [Message("user", "two words")], GenerationParams(max_tokens=8))


async def until(condition) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


async def test_offload_waits_until_a_running_chat_is_answered():
    engine = Engine(delay_s=0.2)
    shell = Shell(engine, timeout_s=30.0)
    chat = asyncio.create_task(shell.chat(request()))
    await until(lambda: engine.in_flight == 1)
    await shell.offload()
    reply = await chat
    assert reply.text  # answered, not cut off by the offload
    assert engine.running_at_offload == [0]
    assert not engine.is_loaded() and shell.in_flight.count == 0


async def test_offload_waits_for_a_stream_until_its_last_piece():
    engine = Engine(chunk_delay_s=0.05, chunk_chars=2)
    shell = Shell(engine, timeout_s=30.0)
    pieces: list[str] = []
    started = asyncio.Event()

    async def consume() -> None:
        async for delta in shell.stream(request()):
            pieces.append(delta.text)
            started.set()

    pieces_out_at_offload: list[int] = []
    engine.on_offload = lambda: pieces_out_at_offload.append(len(pieces))
    stream = asyncio.create_task(consume())
    await started.wait()
    offload = asyncio.create_task(shell.offload())
    await stream
    await offload
    assert len(pieces) > 1 and engine.cancelled == 0
    assert pieces_out_at_offload == [len(pieces)]  # freed after the stream's last piece, not during it
    assert shell.in_flight.count == 0


async def test_a_stream_the_caller_drops_stops_holding_the_engine():
    engine = Engine(chunk_delay_s=0.05, chunk_chars=1)
    shell = Shell(engine, timeout_s=30.0)
    stream = shell.stream(request())
    await stream.__anext__()
    assert shell.in_flight.count == 1
    await stream.aclose()  # the client went away
    assert shell.in_flight.count == 0
    await shell.offload()
    assert engine.running_at_offload == [0]


async def test_offload_goes_ahead_at_the_experts_deadline_and_says_so(caplog):
    engine = Engine(delay_s=5.0)
    shell = Shell(engine, timeout_s=0.05)
    chat = asyncio.create_task(shell.chat(request()))
    await until(lambda: engine.in_flight == 1)
    with caplog.at_level(logging.WARNING, logger="coe.expert"):
        await shell.offload()
    assert engine.running_at_offload == [1]  # the deadline won: memory is freed under the call
    assert "1 calls still running after 0.05 s" in caplog.text
    chat.cancel()
    await asyncio.gather(chat, return_exceptions=True)
    assert shell.in_flight.count == 0


async def test_an_idle_engine_offloads_at_once():
    engine = Engine()
    shell = Shell(engine, timeout_s=30.0)
    await shell.offload()
    assert engine.running_at_offload == [0] and not engine.is_loaded()


def test_a_shell_described_without_a_timeout_uses_the_config_default():
    from router_service.config.service import ExpertConfig

    shell = Shell(Engine(), timeout_s=1.0)
    shell.description = {"id": "e", "model": "m"}
    assert shell.drain_timeout_s == ExpertConfig.model_fields["timeout_s"].default
