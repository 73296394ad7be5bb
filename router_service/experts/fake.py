"""A fake expert for tests: same interface as the real one, deterministic, and countable.

It honours the GenerationParams the way vLLM does, in miniature: `max_tokens` (words), `stop`, `n`
(choices), `seed` (temperature > 0 "samples" a suffix word: the same seed gives the same text, choice i
uses seed + i; no seed gives fresh randomness; temperature 0 is greedy, so every choice is the same),
`logprobs`/`top_logprobs` (made-up but deterministic values, one token per word) and `structured`
(the answer wrapped as a JSON object — it does not follow a json_schema). `requests` keeps what reached it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from collections.abc import AsyncIterator, Callable

from router_service.domain import (
    ExpertChoice,
    ExpertDelta,
    ExpertReply,
    ExpertRequest,
    GenerationParams,
    TokenLogprob,
    TopLogprob,
)
from router_service.errors import ExpertError

_SAMPLED_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def _default_answer(expert_id: str, request: ExpertRequest) -> str:
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    return f"[{expert_id}] {last_user}"


def fake_tokens(text: str) -> list[str]:
    """One token per word; every word after the first keeps its leading space (as BPE tokens do)."""
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])] if text else []


def fake_logprobs(tokens: list[str], top: int) -> list[TokenLogprob]:
    out = []
    for token in tokens:
        logprob = -round(0.1 * (1 + len(token) % 7), 4)
        alternatives = [TopLogprob(token, logprob, tuple(token.encode()))]
        alternatives += [TopLogprob(f"<alt{j}>", logprob - j, tuple(f"<alt{j}>".encode())) for j in range(1, top)]
        out.append(TokenLogprob(token, logprob, tuple(token.encode()), tuple(alternatives[:top])))
    return out


class FakeExpertBackend:
    """Answers with `answer(expert_id, request)`; can be slow (`delay_s`) or fail (`fail`)."""

    def __init__(
        self,
        expert_id: str,
        *,
        answer: Callable[[str, ExpertRequest], str] | None = None,
        delay_s: float = 0.0,
        fail: bool = False,
        chunk_chars: int = 4,
        chunk_delay_s: float = 0.0,
        answer_text: str | None = None,
    ) -> None:
        self.expert_id = expert_id
        self.answer = answer or ((lambda _e, _r: answer_text) if answer_text is not None else _default_answer)
        self.delay_s = delay_s
        self.fail = fail
        self.chunk_chars = chunk_chars
        self.chunk_delay_s = chunk_delay_s
        self.calls = 0
        self.cancelled = 0
        self.in_flight = 0  # calls inside `chat` right now: lets tests act while a request is running
        # The latest requests, newest last (bounded: serve tests and benches run fakes for thousands).
        self.requests: collections.deque[ExpertRequest] = collections.deque(maxlen=256)

    def _choice(self, request: ExpertRequest, index: int) -> ExpertChoice:
        p: GenerationParams = request.params
        text = self.answer(self.expert_id, request)
        if p.temperature > 0:
            rng = random.Random(p.seed + index) if p.seed is not None else random.Random()
            text = f"{text} {rng.choice(_SAMPLED_WORDS)}"
        if p.structured:
            text = json.dumps({"answer": text})
        words = text.split(" ")
        finish = "stop"
        if len(words) > max(p.max_tokens, 1):
            text, finish = " ".join(words[: max(p.max_tokens, 1)]), "length"
        cut = min((text.find(s) for s in p.stop if s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        logprobs = fake_logprobs(fake_tokens(text), p.top_logprobs) if p.logprobs else None
        return ExpertChoice(text, finish, logprobs)

    @staticmethod
    def _tokens(text: str) -> int:
        return max(len(text.split()), 1) if text else 0

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        self.calls += 1
        self.requests.append(request)
        self.in_flight += 1
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        if self.fail:
            raise ExpertError(f"expert '{self.expert_id}' failed (fake failure)")
        first, *more = [self._choice(request, i) for i in range(request.params.n)]
        prompt = sum(self._tokens(m.content) for m in request.messages)
        completion = sum(self._tokens(c.text) for c in (first, *more))
        return ExpertReply(
            self.expert_id, first.text, first.finish_reason, prompt, completion, first.logprobs, list(more)
        )

    async def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        reply = await self.chat(request)
        done = 0
        try:
            for index, choice in enumerate(reply.choices):
                pieces: list[tuple[str, list[TokenLogprob] | None]]
                if choice.logprobs is not None:  # one delta per token, each with its logprob
                    pieces = [(t.token, [t]) for t in choice.logprobs] or [("", [])]
                else:
                    text = choice.text
                    pieces = [
                        (text[i : i + self.chunk_chars], None) for i in range(0, len(text), self.chunk_chars)
                    ] or [("", None)]
                for piece, logprobs in pieces[:-1]:
                    yield ExpertDelta(piece, index=index, logprobs=logprobs)
                    await asyncio.sleep(self.chunk_delay_s)
                done += self._tokens(choice.text)
                piece, logprobs = pieces[-1]
                yield ExpertDelta(piece, choice.finish_reason, reply.prompt_tokens, done, index, logprobs)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1  # the consumer went away mid-answer: generation stops here
            raise

    async def health(self) -> bool:
        return not self.fail


class OffloadableFakeExpert(FakeExpertBackend):
    """A fake that must be loaded before it answers, and counts its loads — for residency tests."""

    def __init__(self, expert_id: str, *, loaded: bool = False, load_delay_s: float = 0.0, **kwargs) -> None:
        super().__init__(expert_id, **kwargs)
        self.loaded = loaded
        self.load_delay_s = load_delay_s
        self.loads = 0
        self.offloads = 0
        # (event, time.monotonic()) per load start and offload end: the span this engine held memory.
        # CLOCK_MONOTONIC is machine-wide, so spans from several processes can be overlaid.
        self.timeline: list[tuple[str, float]] = [("loaded", time.monotonic())] if loaded else []

    async def load(self) -> None:
        if self.loaded:
            raise RuntimeError(f"{self.expert_id} loaded twice")
        self.timeline.append(("loaded", time.monotonic()))
        await asyncio.sleep(self.load_delay_s)
        self.loaded = True
        self.loads += 1

    async def offload(self) -> None:
        self.loaded = False
        self.offloads += 1
        self.timeline.append(("offloaded", time.monotonic()))

    def is_loaded(self) -> bool:
        return self.loaded

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        if not self.loaded:
            raise ExpertError(f"{self.expert_id} called while offloaded")
        return await super().chat(request)
