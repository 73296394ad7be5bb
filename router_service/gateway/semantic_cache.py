"""A semantic cache of answers: exact repeats always hit, near-identical prompts hit above a cosine.

Entries live in partitions. The caller builds the partition key from everything that must match for
an answer to be reusable: the API key, the experts the router chose, the generation parameters and
the conversation before the last user turn. So an answer never crosses tenants, experts or settings;
only the wording of the last user turn may differ, by at most `1 - threshold` in cosine.

Bounded two ways: at most `max_entries` in all (least recently used go first) and `ttl_s` per entry.
Per router replica and in memory: a cache is a latency tool, losing it on restart loses nothing.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CachedAnswer:
    """What is replayed: the choices, the usage and the routing of the answer that was cached."""

    choices: tuple[Any, ...]  # ExpertChoice
    prompt_tokens: int
    completion_tokens: int
    experts: tuple[str, ...]
    request_id: str


@dataclass
class _Entry:
    partition: str
    text: str
    vector: np.ndarray | None
    answer: CachedAnswer
    stored_at: float


@dataclass(frozen=True)
class CacheHit:
    answer: CachedAnswer
    similarity: float  # 1.0 for an exact repeat


class SemanticCache:
    def __init__(
        self,
        threshold: float = 0.95,
        max_entries: int = 1024,
        ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()  # LRU order, oldest first
        self._partitions: dict[str, set[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def partition_key(**parts: Any) -> str:
        """A stable digest of what must match exactly (values are repr'd in sorted key order)."""
        text = "\x1f".join(f"{k}={parts[k]!r}" for k in sorted(parts))
        return hashlib.sha256(text.encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, partition: str, text: str, vector: np.ndarray | None) -> CacheHit | None:
        with self._lock:
            self._expire()
            exact = self._entries.get((partition, text))
            if exact is not None:
                self._entries.move_to_end((partition, text))
                return CacheHit(exact.answer, 1.0)
            if vector is None or self.threshold >= 1.0:
                return None
            best: _Entry | None = None
            best_similarity = -1.0
            for key in self._partitions.get(partition, ()):
                entry = self._entries[key]
                if entry.vector is None:
                    continue
                similarity = float(np.dot(entry.vector, vector))  # both L2-normalised: the cosine
                if similarity > best_similarity:
                    best, best_similarity = entry, similarity
            if best is None or best_similarity < self.threshold:
                return None
            self._entries.move_to_end((best.partition, best.text))
            return CacheHit(best.answer, best_similarity)

    def put(self, partition: str, text: str, vector: np.ndarray | None, answer: CachedAnswer) -> None:
        key = (partition, text)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = _Entry(partition, text, vector, answer, self.clock())
            self._partitions.setdefault(partition, set()).add(key)
            while len(self._entries) > self.max_entries:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str, str]) -> None:
        self._entries.pop(key)
        keys = self._partitions.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._partitions[key[0]]

    def _expire(self) -> None:
        # Entries are stored in time order and a hit only moves an entry later, so checking the oldest
        # in LRU order is not enough; a full sweep is bounded by max_entries and runs under the lock.
        now = self.clock()
        stale = [k for k, e in self._entries.items() if now - e.stored_at > self.ttl_s]
        for key in stale:
            self._drop(key)
