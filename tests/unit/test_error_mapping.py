"""One owner per rule for errors: foreign errors are mapped by one table per library at every crossing
(`router_service.experts.errors.mapped_errors`), and every HTTP error body leaves through one function
(`router_service.api.guards.error_json`), which also counts it."""

import asyncio

import httpx
import pytest

from router_service.api.app import create_app
from router_service.config.service import ServerConfig
from router_service.errors import (
    ExpertError,
    ExpertTimeoutError,
    ExpertUnavailableError,
    InvalidRequestError,
)
from router_service.experts.errors import deadline_errors, expert_unavailable, mapped_errors
from router_service.serving.metrics import RecordingMetrics

from .helpers import make_service


class ForeignDead(Exception):
    pass


class ForeignBusy(ForeignDead):
    pass


TABLE = ((ForeignBusy, lambda e, exc: InvalidRequestError(f"{e} busy")), (ForeignDead, expert_unavailable))


def raised(exc: BaseException, table=TABLE) -> BaseException:
    with pytest.raises(BaseException) as info, mapped_errors("math", table):
        raise exc
    return info.value


def test_the_first_matching_row_wins_and_keeps_the_cause():
    busy, dead = ForeignBusy("queue full"), ForeignDead("gone")
    assert isinstance(raised(busy), InvalidRequestError) and raised(busy).__cause__ is busy
    error = raised(dead)
    assert isinstance(error, ExpertUnavailableError) and "'math'" in error.message and "gone" in error.message


def test_unmatched_foreign_errors_are_a_502_and_ours_pass_through():
    assert isinstance(raised(KeyError("x")), ExpertError)
    ours = ExpertTimeoutError("slow")
    assert raised(ours) is ours


def test_cancellation_is_control_flow_not_an_expert_error():
    assert isinstance(raised(asyncio.CancelledError()), asyncio.CancelledError)


def test_the_core_deadline_table_names_the_expert_and_its_timeout():
    error = raised(asyncio.TimeoutError(), deadline_errors(2.5))
    assert isinstance(error, ExpertTimeoutError) and error.message == "expert 'math' timed out after 2.5s"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_guard_rejections_are_counted_like_every_other_error(anyio_backend):
    """401 and 413 come from the middlewares, before any route: they used to skip coe_errors_total."""
    service, _ = make_service()
    metrics = RecordingMetrics()
    server = ServerConfig(api_keys=["k"], max_body_bytes=1024)
    app = create_app(lambda: service, server, metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/v1/models")).status_code == 401
        big = await client.post("/v1/chat/completions", content=b"x" * 2000, headers={"authorization": "Bearer k"})
        assert big.status_code == 413
    assert metrics.counts[("error", "authentication_error")] == 1
    assert metrics.counts[("error", "invalid_request_error")] == 1
