"""Export the packaged MiniLM sentence embedder to ONNX (fp32 and int8), with no download.

`python -m zoo.embedder_export [--out models/embedders/all-MiniLM-L6-v2-onnx] [--force]`

The graph holds the whole sentence-transformers pipeline after tokenisation: the BERT encoder, mean
pooling over the attention mask, and L2 normalisation. So the router's runtime (`OnnxEmbedder` in
`router_service.routing.onnx_embedder`) needs only `tokenizers`, `onnxruntime` or `openvino`, and
numpy; no torch. The int8 variant is onnxruntime's dynamic quantisation of the fp32 graph.

The export checks itself: it embeds a fixed set of prompts with sentence-transformers (torch) and with
each exported graph, and fails loudly when the fp32 graph's cosine to torch is below 0.9999, or the int8
graph's below 0.98. Its `zoo-build.json` records the hashes of the source weights and of each graph.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from zoo.cache import locked_build, read_marker

DEFAULT_OUT = Path("models/embedders/all-MiniLM-L6-v2-onnx")
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2
FP32_GATE = 0.9999  # min cosine to torch over the check prompts
INT8_GATE = 0.98
CHECK_PROMPTS = (
    "What is 37+45?",
    "What is the capital of France?",
    "Reverse the string 'kettle'.",
    "Convert 3 kilometres to metres.",
    "Write a haiku about the sea.",
    "hello, who are you?",
    "Explain the difference between a list and a tuple in Python, with an example of when each is the "
    "better choice, and what happens to performance when the collection is very large.",
    "Le chat est sur la table.",
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_path() -> Path:
    from all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _export_fp32(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(source)).eval()

    class Pooled(torch.nn.Module):
        """BERT → mean over real tokens → unit length: what sentence-transformers' modules.json does."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    dummy = torch.ones((2, 8), dtype=torch.long)
    dynamic = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            Pooled(),
            (dummy, dummy, torch.zeros_like(dummy)),
            str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "token_type_ids": dynamic},
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency, dynamic axes as declared
        )


def _quantize_int8(fp32: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weight scales: per-tensor scales lost up to 8% cosine on short prompts (measured).
    quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True)


def _check(out: Path, source: Path) -> dict[str, float]:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from router_service.routing.onnx_embedder import OnnxEmbedder

    reference = SentenceTransformer(str(source), device="cpu").encode(
        list(CHECK_PROMPTS), normalize_embeddings=True, convert_to_numpy=True
    )
    cosines = {}
    for variant, gate in (("onnx", FP32_GATE), ("onnx-int8", INT8_GATE)):
        vectors = OnnxEmbedder(variant, path=str(out)).encode(list(CHECK_PROMPTS))
        cosine = float(np.min(np.sum(vectors * reference, axis=1)))
        cosines[variant] = round(cosine, 6)
        if cosine < gate:
            raise RuntimeError(
                f"embedder export {variant}: min cosine to sentence-transformers {cosine:.6f} < gate {gate}"
            )
    return cosines


def is_current(out: Path) -> bool:
    marker = read_marker(out)
    if not marker or any(not (out / name).exists() for name in marker.get("graphs", {})):
        return False
    return marker.get("source_sha256") == _sha256(_source_path() / "model.safetensors")


def export(out: Path = DEFAULT_OUT, force: bool = False) -> dict:
    """Build (once, single-flight across processes) and return the export record (`zoo-build.json`)."""
    out = Path(out)

    def make(tmp: Path) -> dict:
        started = time.perf_counter()
        source = _source_path()
        _export_fp32(source, tmp / "model.onnx")
        _quantize_int8(tmp / "model.onnx", tmp / "model-int8.onnx")
        shutil.copy(source / "tokenizer.json", tmp / "tokenizer.json")
        (tmp / "tokenizer_settings.json").write_text(json.dumps({"max_seq_length": MAX_SEQ_LENGTH}))
        cosines = _check(tmp, source)
        return {
            "kind": "embedder-onnx",
            "source": str(source),
            "source_sha256": _sha256(source / "model.safetensors"),
            "graphs": {name: _sha256(tmp / name) for name in ("model.onnx", "model-int8.onnx")},
            "min_cosine_to_torch": cosines,
            "gates": {"onnx": FP32_GATE, "onnx-int8": INT8_GATE},
            "seconds": round(time.perf_counter() - started, 1),
        }

    locked_build(out, is_current, make, force=force)
    marker = read_marker(out)
    assert marker is not None
    return marker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(export(args.out, args.force), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
