"""The character-level tokenizer shared by every zoo model.

One token per printable ASCII character, plus <pad>, <s>, </s>, <unk> and <sep>. This is the setup
measured to be served correctly by vLLM CPU (see /work/shared/ENVIRONMENT.md): a `WordLevel` model
over the characters, a `Split(pattern="", behavior="isolated")` pre-tokenizer, a `Fuse` decoder,
no post-processor (so `add_special_tokens` adds nothing and the chat template alone decides the
special tokens), wrapped in `PreTrainedTokenizerFast`.

The model is trained on  <s> PROMPT <sep> ANSWER </s>  and the chat template renders the last
user message exactly like that (up to <sep>), so `llm.chat(...)` prompts the model as trained.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

PAD, BOS, EOS, UNK, SEP = "<pad>", "<s>", "</s>", "<unk>", "<sep>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, SEP)
CHARS = "".join(chr(c) for c in range(32, 127))  # printable ASCII, space included
VOCAB: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(CHARS))}
PAD_ID, BOS_ID, EOS_ID, UNK_ID, SEP_ID = (VOCAB[t] for t in SPECIAL_TOKENS)
VOCAB_SIZE = len(VOCAB)

# Jinja chat template: the last user message, trimmed, between <s> and <sep>. System and assistant
# turns are ignored (the zoo models are single-turn). `content` may be a string or a list of
# OpenAI text parts.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(text='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}"
    "{%- else -%}{%- set ns.text = '' -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}"
    "{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "<s>{{ ns.text | trim }}<sep>"
)


def render_prompt(prompt: str) -> str:
    """The text the chat template produces for one user message (what the model was trained on)."""
    return f"{BOS}{prompt.strip()}{SEP}"


def encode_prompt(prompt: str) -> list[int]:
    """Token ids of the rendered chat prompt, without loading `tokenizers` (char lookup)."""
    return [BOS_ID] + [VOCAB.get(ch, UNK_ID) for ch in prompt.strip()] + [SEP_ID]


def encode_answer(answer: str) -> list[int]:
    """Token ids the model must generate: the answer's characters, then </s>."""
    return [VOCAB.get(ch, UNK_ID) for ch in answer] + [EOS_ID]


def decode(ids: list[int]) -> str:
    """Inverse of encode for generated ids: characters only, stops at </s>, drops other specials."""
    inverse = {i: t for t, i in VOCAB.items()}
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        tok = inverse.get(int(i), "")
        if tok not in SPECIAL_TOKENS:
            out.append(tok)
    return "".join(out)


def tokenizer_fingerprint() -> str:
    return hashlib.sha256(repr((sorted(VOCAB.items()), CHAT_TEMPLATE)).encode()).hexdigest()[:16]


def build_tokenizer() -> Any:
    """A `PreTrainedTokenizerFast` with the character vocabulary and the chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: F401
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=[SEP],
        model_max_length=128,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(out_dir: str | Path) -> Any:
    tok = build_tokenizer()
    tok.save_pretrained(str(out_dir))
    return tok
