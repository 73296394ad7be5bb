"""On-disk cache of prompt embeddings, so a second eval run does not re-embed (cold MiniLM on the
20k-prompt tables takes ~10 min on 2 cores; warm it takes seconds).

Layout: `<cache dir>/<embedder name, sanitised>-<hash of name>/shard-*.npz`. Each shard holds `keys`
(uint8 (n, 32): SHA-256 of the UTF-8 text) and `vectors` (float32 (n, dim)). New vectors are written
as a new shard every `save_every` texts, so an interrupted cold run keeps what it computed, and two
processes never write the same file. The key is the text alone within a per-embedder directory, so a
different model (or dimension) can never return another model's vector.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from router_service.routing.embedding import Embedder

DEFAULT_CACHE_DIR = Path(".cache") / "embeddings"
CACHE_DIR_ENV = "COE_CACHE_DIR"


def default_cache_dir() -> Path:
    """`$COE_CACHE_DIR` if set, else `.cache/embeddings` under the current directory."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path.cwd() / DEFAULT_CACHE_DIR


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class CachedEmbedder:
    """Wraps any Embedder; `encode` returns cached vectors and embeds (then stores) only new texts."""

    def __init__(
        self,
        inner: Embedder,
        cache_dir: str | Path | None = None,
        *,
        batch_size: int = 256,
        save_every: int = 2048,
        max_shards: int = 32,
        progress: bool = True,
    ) -> None:
        self.inner = inner
        self.name = inner.name  # strategies may record the embedder name; keep the real model's
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        # Keyed by model and backend: int8 vectors must not be served as torch's.
        key = getattr(inner, "cache_key", inner.name)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[-80:]
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
        self.directory = root / f"{safe}-{digest}"
        self.batch_size = batch_size
        self.save_every = save_every
        self.max_shards = max_shards
        self.progress = progress
        self._memory: dict[bytes, np.ndarray] | None = None
        self.hits = 0
        self.misses = 0

    def __getattr__(self, attr: str) -> Any:
        # Delegate anything else (e.g. `path`, `batch_size` of the inner model) to the wrapped embedder;
        # guard `inner` itself so copying/unpickling a half-built object cannot recurse.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    # -- storage ------------------------------------------------------------------------------
    def _load(self) -> dict[bytes, np.ndarray]:
        if self._memory is None:
            self._memory = {}
            shards = sorted(self.directory.glob("shard-*.npz"))
            read = []
            for shard in shards:
                if shard.name.endswith(".tmp.npz"):
                    continue
                try:
                    with np.load(shard, allow_pickle=False) as data:
                        keys, vectors = data["keys"], data["vectors"]
                except (OSError, ValueError, KeyError):
                    continue  # a torn or foreign file: ignore it, the texts get re-embedded
                for key, vector in zip(keys, vectors):
                    self._memory[key.tobytes()] = vector
                read.append(shard)
            if len(read) > self.max_shards:
                self._compact(read)
        return self._memory

    def _compact(self, shards: list[Path]) -> None:
        """Many small runs leave many small shards; merge them so start-up stays one quick read."""
        memory = self._memory or {}
        self._save(list(memory), np.vstack(list(memory.values())))
        for shard in shards:
            shard.unlink(missing_ok=True)

    def _save(self, keys: list[bytes], vectors: np.ndarray) -> None:
        if not keys:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        final = self.directory / f"shard-{uuid.uuid4().hex}.npz"
        temporary = final.with_name(final.stem + ".tmp.npz")
        np.savez(temporary, keys=key_array, vectors=np.asarray(vectors, dtype=np.float32))
        os.replace(temporary, final)  # atomic: readers never see half a shard

    def cached_count(self) -> int:
        return len(self._load())

    # -- Embedder -----------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        memory = self._load()
        keys = [text_key(t) for t in texts]
        todo: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in memory and key not in todo:
                todo[key] = text
        self.misses += len(todo)
        self.hits += len(texts) - len(todo)
        if todo:
            self._embed_missing(todo, memory)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack([memory[k] for k in keys]).astype(np.float32, copy=False)

    def _embed_missing(self, todo: dict[bytes, str], memory: dict[bytes, np.ndarray]) -> None:
        pending_keys = list(todo)
        unsaved_keys: list[bytes] = []
        unsaved_vectors: list[np.ndarray] = []
        bar = tqdm(
            total=len(pending_keys),
            desc=f"embedding ({self.name})",
            unit="prompt",
            disable=not self.progress or len(pending_keys) < self.batch_size,
            leave=False,
        )
        for start in range(0, len(pending_keys), self.batch_size):
            batch = pending_keys[start : start + self.batch_size]
            vectors = np.asarray(self.inner.encode([todo[k] for k in batch]), dtype=np.float32)
            for key, vector in zip(batch, vectors):
                memory[key] = vector
            unsaved_keys += batch
            unsaved_vectors.append(vectors)
            if len(unsaved_keys) >= self.save_every:
                self._save(unsaved_keys, np.vstack(unsaved_vectors))
                unsaved_keys, unsaved_vectors = [], []
            bar.update(len(batch))
        bar.close()
        if unsaved_keys:
            self._save(unsaved_keys, np.vstack(unsaved_vectors))
