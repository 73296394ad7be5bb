"""Counters for per-key limits, shared by every router replica: SQLite on one machine, Redis across nodes.

One small interface, three stores. A counter is named by the caller (key hash, kind and time window
in the name) and expires with its window, so nothing grows without bound:

- `take(name, amount, limit, expires_at)`: add `amount` only if the total stays within `limit`,
  atomically across processes (requests per minute);
- `add(name, amount, expires_at)`: add unconditionally (tokens and spend, charged after the answer);
- `read(names)`: current values, 0 for a counter not seen.

The stores are synchronous and fast; callers run them off the event loop under a deadline.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class CounterStore(Protocol):
    def take(self, name: str, amount: float, limit: float, expires_at: float) -> tuple[bool, float]:
        """(taken, total after): not taken when the total would exceed `limit`, and then nothing changes."""
        ...

    def add(self, name: str, amount: float, expires_at: float) -> float: ...

    def read(self, names: Sequence[str]) -> list[float]: ...

    def close(self) -> None: ...


class MemoryCounterStore:
    """One process only, lost on restart: for tests and single-replica experiments."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _current(self, name: str) -> float:
        value, expires_at = self._values.get(name, (0.0, 0.0))
        return value if expires_at > time.time() else 0.0

    def take(self, name: str, amount: float, limit: float, expires_at: float) -> tuple[bool, float]:
        with self._lock:
            total = self._current(name) + amount
            if total > limit:
                return False, total - amount
            self._values[name] = (total, expires_at)
            return True, total

    def add(self, name: str, amount: float, expires_at: float) -> float:
        with self._lock:
            total = self._current(name) + amount
            self._values[name] = (total, expires_at)
            return total

    def read(self, names: Sequence[str]) -> list[float]:
        with self._lock:
            return [self._current(n) for n in names]

    def close(self) -> None:
        pass


class SQLiteCounterStore:
    """A file every replica on this machine opens. WAL lets readers run beside the one writer, and
    `BEGIN IMMEDIATE` makes each check-and-add one transaction across processes."""

    PRUNE_EVERY_S = 60.0

    def __init__(self, path: str | Path, timeout_s: float = 2.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by this process's worker threads, serialised by a lock.
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS counters "
                "(name TEXT PRIMARY KEY, value REAL NOT NULL, expires_at REAL NOT NULL)"
            )
        self._pruned = 0.0

    def _value(self, name: str, now: float) -> float:
        row = self._db.execute("SELECT value, expires_at FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row and row[1] > now else 0.0

    def _write(self, name: str, total: float, expires_at: float) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            (name, total, expires_at),
        )

    def _prune(self, now: float) -> None:
        if now - self._pruned > self.PRUNE_EVERY_S:
            self._db.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
            self._pruned = now

    def take(self, name: str, amount: float, limit: float, expires_at: float) -> tuple[bool, float]:
        with self._lock:
            now = time.time()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._value(name, now)
                taken = current + amount <= limit
                if taken:
                    self._write(name, current + amount, expires_at)
                self._prune(now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return taken, current + amount if taken else current

    def add(self, name: str, amount: float, expires_at: float) -> float:
        with self._lock:
            now = time.time()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                total = self._value(name, now) + amount
                self._write(name, total, expires_at)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return total

    def read(self, names: Sequence[str]) -> list[float]:
        with self._lock:
            now = time.time()
            return [self._value(n, now) for n in names]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# Check and add in one step on the server, so replicas on different nodes never both take the last slot.
_TAKE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local total = current + tonumber(ARGV[1])
if total > tonumber(ARGV[2]) then return {0, tostring(current)} end
redis.call('SET', KEYS[1], tostring(total))
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return {1, tostring(total)}
"""


class RedisCounterStore:
    """A Redis server every router replica on every node reaches; counters expire with their window."""

    PREFIX = "coe:limits:"

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._take = self._redis.register_script(_TAKE)

    def take(self, name: str, amount: float, limit: float, expires_at: float) -> tuple[bool, float]:
        taken, total = self._take(keys=[self.PREFIX + name], args=[amount, limit, int(expires_at * 1000)])
        return bool(taken), float(total)

    def add(self, name: str, amount: float, expires_at: float) -> float:
        pipe = self._redis.pipeline()
        pipe.incrbyfloat(self.PREFIX + name, amount)
        pipe.pexpireat(self.PREFIX + name, int(expires_at * 1000))
        total, _ = pipe.execute()
        return float(total)

    def read(self, names: Sequence[str]) -> list[float]:
        if not names:
            return []
        values = self._redis.mget([self.PREFIX + n for n in names])
        return [float(v) if v is not None else 0.0 for v in values]

    def close(self) -> None:
        self._redis.close()


def open_store(url: str, timeout_s: float = 2.0, base_dir: Path | None = None) -> CounterStore:
    """`sqlite:///PATH` (relative to `base_dir`, default the working directory), `redis://...`, `memory://`."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return SQLiteCounterStore(path, timeout_s)
    if url.startswith(("redis://", "rediss://")):
        return RedisCounterStore(url, timeout_s)
    if url == "memory://":
        return MemoryCounterStore()
    raise ValueError(f"unknown counter store '{url}' (sqlite:///PATH, redis://HOST:PORT/DB or memory://)")
