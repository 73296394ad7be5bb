"""Counter stores behind per-key limits: the same suite on SQLite, a real redis-server, and memory."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest

from router_service.gateway.counters import MemoryCounterStore, RedisCounterStore, SQLiteCounterStore, open_store

STORES = ["sqlite", "redis", "memory"]


@pytest.fixture(params=STORES)
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'counters.sqlite3'}"
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return "memory://"


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()


def fresh() -> str:
    return f"test:{uuid.uuid4().hex}"  # the redis server is shared by the session


def later(seconds: float = 60) -> float:
    return time.time() + seconds


def test_open_store_picks_the_store_by_url(store, store_url):
    expected = {"sqlite": SQLiteCounterStore, "redis": RedisCounterStore, "memory": MemoryCounterStore}
    assert isinstance(store, expected[store_url.split(":")[0]])


def test_take_adds_until_the_limit_and_refuses_without_changing(store):
    name = fresh()
    assert [store.take(name, 1, 3, later()) for _ in range(3)] == [(True, 1), (True, 2), (True, 3)]
    assert store.take(name, 1, 3, later()) == (False, 3)
    assert store.read([name]) == [3]


def test_take_of_several_at_once_is_all_or_nothing(store):
    name = fresh()
    assert store.take(name, 4, 5, later()) == (True, 4)
    assert store.take(name, 2, 5, later()) == (False, 4)
    assert store.take(name, 1, 5, later()) == (True, 5)


def test_add_and_read_fractional_amounts(store):
    name, other = fresh(), fresh()
    store.add(name, 0.25, later())
    assert store.add(name, 0.5, later()) == pytest.approx(0.75)
    assert store.read([name, other]) == [pytest.approx(0.75), 0]


def test_a_counter_past_its_expiry_reads_as_zero(store):
    name = fresh()
    store.add(name, 5, time.time() + 0.3)
    assert store.read([name]) == [5]
    deadline = time.monotonic() + 10
    while store.read([name]) != [0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.read([name]) == [0]
    assert store.take(name, 1, 1, later()) == (True, 1)  # a new window starts from nothing


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_counters_survive_reopening_the_store(kind, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}" if kind == "sqlite" else request.getfixturevalue("redis_url")
    name = fresh()
    first = open_store(url)
    first.add(name, 7, later())
    first.close()
    second = open_store(url)  # a router restart opens the store anew
    assert second.read([name]) == [7]
    second.close()


def _take_many(url: str, name: str, times: int, limit: int, out) -> None:
    store = open_store(url)
    out.put(sum(store.take(name, 1, limit, time.time() + 60)[0] for _ in range(times)))
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_two_processes_never_take_more_than_the_limit_together(kind, tmp_path, request):
    """Two router replicas are two processes: between them, exactly `limit` takes succeed."""
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}" if kind == "sqlite" else request.getfixturevalue("redis_url")
    name = fresh()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_take_many, args=(url, name, 60, 75, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    taken = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert sum(taken) == 75
    store = open_store(url)
    assert store.read([name]) == [75]
    store.close()


def test_unknown_store_url_is_refused():
    with pytest.raises(ValueError, match="unknown counter store"):
        open_store("postgres://x")
