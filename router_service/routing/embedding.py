"""Prompt embedders. Strategies receive one by injection; they never load models themselves.

`SentenceTransformerEmbedder` is the real one (all-MiniLM-L6-v2 shipped inside a PyPI wheel, so no
hub access). `HashingEmbedder` is a small deterministic embedder for tests and quick experiments.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
# Written by `python -m zoo.router_encoder` into the folder of a router-trained encoder.
ROUTER_ENCODER_RECORD = "router-encoder.json"
ENCODER_WEIGHTS = "model.safetensors"
# Which end of a prompt longer than the encoder's window (256 tokens for MiniLM) is embedded. "head" is
# sentence-transformers' own behaviour. "tail" keeps the end, where a few-shot prompt puts its question:
# RouterBench's ARC and Winogrande prompts are 5-shot (median 2,000 and 1,400 characters), so their
# heads are the same few examples and embed to one vector per task (README "Routing quality").
EMBEDDER_KEEP = ("head", "tail")


def check_keep(keep: str) -> str:
    if keep not in EMBEDDER_KEEP:
        raise ValueError(f"unknown embedder keep {keep!r}; known: {', '.join(EMBEDDER_KEEP)}")
    return keep


def keep_suffix(keep: str) -> str:
    """What a cache key adds for `keep`: nothing for the default, so cached head vectors stay valid."""
    return "" if keep == "head" else f"+{keep}"


def embedder_fingerprint(name: str) -> str | None:
    """SHA-256 of the weights when `name` is a local router-trained encoder folder, else None.

    Such a folder can be retrained in place under the same name; the hash is what tells the two apart,
    for the embedding cache and for an artifact fitted in the old encoder's vector space."""
    folder = Path(name)
    weights = folder / ENCODER_WEIGHTS
    if not (folder / ROUTER_ENCODER_RECORD).is_file() or not weights.is_file():
        return None
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embedder_keep(embedder: object) -> str:
    """The end of a long prompt `embedder` embeds ("head" for embedders that do not say)."""
    return getattr(embedder, "keep", "head")


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit L2 norm, as float32; zero rows stay zero."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norms == 0, 1.0, norms)


@runtime_checkable
class Embedder(Protocol):
    name: str
    # Optional `keep` attribute ("head" when absent) and `with_keep(keep)`, a copy keeping the other end.

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalised embeddings."""


class SentenceTransformerEmbedder:
    """sentence-transformers model loaded lazily from a local path (default: the all-MiniLM-L6-v2 wheel)."""

    def __init__(
        self,
        name: str = DEFAULT_EMBEDDER,
        path: str | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        keep: str = "head",
    ) -> None:
        self.name = name
        self.keep = check_keep(keep)
        fingerprint = None if path else embedder_fingerprint(name)
        self.cache_key = (f"{name}@{fingerprint[:16]}" if fingerprint else name) + keep_suffix(keep)
        self.path = path
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._lock = threading.Lock()

    def _resolve_path(self) -> str:
        if self.path:
            return self.path
        if self.name == DEFAULT_EMBEDDER:
            from all_minilm_l6_v2 import get_model_path

            return str(get_model_path())
        # Any other name must be a local directory: there is no model hub here.
        return self.name

    def _load(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(self._resolve_path(), device=self.device)
                # A fast tokenizer truncates from this side; special tokens are added after, so [CLS] stays.
                model.tokenizer.truncation_side = "left" if self.keep == "tail" else "right"
                self._model = model
        return self._model

    def with_keep(self, keep: str) -> SentenceTransformerEmbedder:
        return SentenceTransformerEmbedder(self.name, self.path, self.batch_size, self.device, keep=keep)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class HashingEmbedder:
    """Deterministic bag of hashed word and character n-grams; no model files, same vector for same text."""

    def __init__(self, dim: int = 256, keep: str = "head") -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"
        # No window: every word counts whichever end is kept; `keep` is recorded so artifacts match.
        self.keep = check_keep(keep)
        self.cache_key = self.name

    def with_keep(self, keep: str) -> HashingEmbedder:
        return HashingEmbedder(self.dim, keep=keep)

    def _features(self, text: str) -> list[str]:
        lowered = text.lower()
        words = lowered.split()
        grams = [f"w:{w}" for w in words]
        padded = f" {lowered} "
        grams += [f"c:{padded[i : i + 3]}" for i in range(max(len(padded) - 2, 0))]
        return grams

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for gram in self._features(text):
                digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
                h = int.from_bytes(digest, "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        return l2_normalise(out)


EMBEDDER_BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")


def make_embedder(
    name: str = DEFAULT_EMBEDDER, backend: str = "torch", path: str | None = None, keep: str = "head"
) -> Embedder:
    """The embedder called `name`, run by `backend`, embedding the `keep` end of a long prompt.

    `torch` is sentence-transformers. The others run the graph that `python -m zoo.embedder_export` made
    from the packaged MiniLM (at `path`, default `models/embedders/all-MiniLM-L6-v2-onnx`). They keep the
    name, because an artifact fitted with one backend routes with another (their agreement is measured
    by `bench/embedder_backends.py`), and they differ in `cache_key`, so cached vectors never mix."""
    if name.startswith("hashing-"):
        return HashingEmbedder(dim=int(name.split("-", 1)[1]), keep=keep)
    if backend == "torch":
        return SentenceTransformerEmbedder(name=name, path=path, keep=keep)
    if backend not in EMBEDDER_BACKENDS:
        raise ValueError(f"unknown embedder backend {backend!r}; known: {', '.join(EMBEDDER_BACKENDS)}")
    if name != DEFAULT_EMBEDDER:
        raise ValueError(f"embedder backend {backend!r} runs only the exported {DEFAULT_EMBEDDER}, not {name!r}")
    from router_service.routing.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder(backend, path=path, keep=keep)
