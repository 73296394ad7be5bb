"""The sentence embedder without torch: the exported MiniLM graph on onnxruntime or OpenVINO.

`python -m zoo.embedder_export` writes the graphs (fp32 and int8) with the tokenizer next to them. The
graph already pools and normalises, so this class only tokenises exactly as sentence-transformers does
(truncate at `max_seq_length`, pad to the longest row) and runs it. Rows are independent: padding a row
changes nothing in its embedding, because pooling is masked.

Backends, by name (`router.embedder_backend` in the config):
  onnx           fp32 graph on onnxruntime
  onnx-int8      dynamically quantised graph on onnxruntime
  openvino       fp32 graph on OpenVINO's CPU plugin
  openvino-int8  the int8 graph on OpenVINO

The int8 graphs quantise activations dynamically: one scale for the whole input tensor, so a row's
embedding would depend on the other rows of its batch (and their padding). They therefore run one
prompt per call, which keeps every embedding, and so every routing decision, a function of its own
prompt alone (`tests/unit/test_embedder_backends.py`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router_service.routing.embedding import check_keep, keep_suffix

DEFAULT_EXPORT_DIR = "models/embedders/all-MiniLM-L6-v2-onnx"
BACKENDS = {
    "onnx": ("onnxruntime", "model.onnx"),
    "onnx-int8": ("onnxruntime", "model-int8.onnx"),
    "openvino": ("openvino", "model.onnx"),
    "openvino-int8": ("openvino", "model-int8.onnx"),
}


class OnnxEmbedder:
    """Embeds with an exported graph; loads lazily, thread-safe, same vectors as the torch embedder."""

    def __init__(
        self, backend: str = "onnx", path: str | None = None, threads: int = 0, batch_size: int = 64, keep: str = "head"
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedder backend {backend!r}; known: {', '.join(BACKENDS)}")
        self.backend = backend
        self.path = Path(path or DEFAULT_EXPORT_DIR)
        self.threads = threads
        self.batch_size = 1 if backend.endswith("-int8") else batch_size
        # The model's name (artifacts record it); the backend shows in the cache key.
        self.name = "all-MiniLM-L6-v2"
        self.keep = check_keep(keep)
        self.cache_key = f"{self.name}@{backend}{keep_suffix(keep)}"
        self._lock = threading.Lock()
        self._run = None
        self._tokenizer = None

    def with_keep(self, keep: str) -> OnnxEmbedder:
        return OnnxEmbedder(
            self.backend, path=str(self.path), threads=self.threads, batch_size=self.batch_size, keep=keep
        )

    def _load(self):
        with self._lock:
            if self._run is None:
                if not (self.path / "tokenizer.json").exists():
                    raise FileNotFoundError(
                        f"no exported embedder at {self.path}: run `python -m zoo.embedder_export --out {self.path}`"
                    )
                from tokenizers import Tokenizer

                settings = json.loads((self.path / "tokenizer_settings.json").read_text())
                tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
                tokenizer.enable_truncation(
                    max_length=int(settings["max_seq_length"]), direction="left" if self.keep == "tail" else "right"
                )
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - the pad token, not a secret
                runtime, graph = BACKENDS[self.backend]
                self._run = self._onnxruntime(graph) if runtime == "onnxruntime" else self._openvino(graph)
                self._tokenizer = tokenizer
        return self._run, self._tokenizer

    def _onnxruntime(self, graph: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(str(self.path / graph), options, providers=["CPUExecutionProvider"])

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            return session.run(["sentence_embedding"], feeds)[0]

        return run

    def _openvino(self, graph: str):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": self.threads} if self.threads else {}
        compiled = ov.Core().compile_model(str(self.path / graph), "CPU", config)
        lock = threading.Lock()  # one infer request, so one caller at a time

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            with lock:
                return np.asarray(compiled(feeds)[0])

        return run

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        run, tokenizer = self._load()
        out = np.zeros((len(texts), 384), dtype=np.float32)
        # Like sentence-transformers: longest first, in chunks, so a chunk pads to similar lengths and
        # memory stays bounded (attention is quadratic in the padded length).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            encodings = tokenizer.encode_batch([texts[i] for i in rows])
            feeds = {
                "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
            }
            out[rows] = run(feeds)
        return out
