"""Concurrent requests share one embedding call; repeated prompts skip it.

Each prompt is still embedded on its own text (sentence-transformers encodes rows independently), so a
routing decision never depends on which other prompts shared its batch.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from router_service.routing.embedding import Embedder


class EmbeddingCache:
    """Bounded LRU of text-hash → embedding."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()

    def get(self, text: str) -> np.ndarray | None:
        if self.max_items <= 0:
            return None
        k = self.key(text)
        vector = self._items.get(k)
        if vector is None:
            self.misses += 1
            return None
        self._items.move_to_end(k)
        self.hits += 1
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        if self.max_items <= 0:
            return
        self._items[self.key(text)] = vector
        self._items.move_to_end(self.key(text))
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)


class MicroBatchingEmbedder:
    """`await embed(text)`: concurrent requests share one `encode` call.

    With `window_s == 0` (the default) a request whose embedder is idle is encoded at once, so a lone
    request pays no wait; requests that arrive while an encode is running queue up, and the queue is
    encoded in one call as soon as the running one ends ("batch while busy"). With `window_s > 0`, the
    first request of a batch waits that long for company instead. `max_batch` caps one call; a full
    queue starts its own call even while another runs.
    """

    def __init__(
        self, embedder: Embedder, *, window_s: float = 0.0, max_batch: int = 64, cache_size: int = 4096
    ) -> None:
        self.embedder = embedder
        self.name = embedder.name
        self.window_s = window_s
        self.max_batch = max_batch
        self.cache = EmbeddingCache(cache_size)
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._flush_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._running = 0  # encode calls in flight
        self.batches = 0
        self.batched_items = 0

    async def embed(self, text: str) -> np.ndarray:
        cached = self.cache.get(text)
        if cached is not None:
            return cached
        future = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if len(self._pending) >= self.max_batch:
            self._start_batch()
        elif self.window_s > 0:
            if self._flush_task is None:
                self._flush_task = self._spawn(self._flush_after_window())
        elif self._running == 0:
            self._start_batch()
        return await future

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # strong reference until done
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_batch(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._running += 1
            self._spawn(self._encode(batch))

    async def _flush_after_window(self) -> None:
        await asyncio.sleep(self.window_s)
        self._flush_task = None
        self._start_batch()

    async def _encode(self, batch: Sequence[tuple[str, asyncio.Future]]) -> None:
        try:
            texts = [t for t, _ in batch]
            try:
                # Off the event loop: encoding is CPU-bound and must not stall other requests' I/O.
                vectors = await asyncio.to_thread(self.embedder.encode, texts)
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            self.batches += 1
            self.batched_items += len(batch)
            for (text, future), vector in zip(batch, vectors):
                self.cache.put(text, vector)
                if not future.done():
                    future.set_result(vector)
        finally:
            self._running -= 1
            if self.window_s == 0 and self._running == 0:
                self._start_batch()  # what queued while this call ran
