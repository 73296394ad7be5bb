"""A fake expert for tests: same interface as the real one, deterministic, and countable."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

from router_service.errors import ExpertError
from router_service.types import ExpertDelta, ExpertReply, ExpertRequest


def _default_answer(expert_id: str, request: ExpertRequest) -> str:
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    return f"[{expert_id}] {last_user}"


class FakeExpertBackend:
    """Answers with `answer(expert_id, request)`; can be slow (`delay_s`) or fail (`fail`)."""

    def __init__(self, expert_id: str, *, answer: Callable[[str, ExpertRequest], str] | None = None,
                 delay_s: float = 0.0, fail: bool = False, chunk_chars: int = 4, chunk_delay_s: float = 0.0,
                 answer_text: str | None = None) -> None:
        self.expert_id = expert_id
        self.answer = answer or ((lambda _e, _r: answer_text) if answer_text is not None else _default_answer)
        self.delay_s = delay_s
        self.fail = fail
        self.chunk_chars = chunk_chars
        self.chunk_delay_s = chunk_delay_s
        self.calls = 0
        self.cancelled = 0

    def _text(self, request: ExpertRequest) -> str:
        text = self.answer(self.expert_id, request)
        words = text.split(" ")
        return " ".join(words[: max(request.params.max_tokens, 1)])

    @staticmethod
    def _tokens(text: str) -> int:
        return max(len(text.split()), 1) if text else 0

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        self.calls += 1
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail:
            raise ExpertError(f"expert '{self.expert_id}' failed (fake failure)")
        text = self._text(request)
        prompt = sum(self._tokens(m.content) for m in request.messages)
        return ExpertReply(self.expert_id, text, "stop", prompt, self._tokens(text))

    async def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        reply = await self.chat(request)
        text = reply.text
        pieces = [text[i:i + self.chunk_chars] for i in range(0, len(text), self.chunk_chars)] or [""]
        try:
            for piece in pieces[:-1]:
                yield ExpertDelta(piece)
                await asyncio.sleep(self.chunk_delay_s)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1  # the consumer went away mid-answer: generation stops here
            raise
        yield ExpertDelta(pieces[-1], reply.finish_reason, reply.prompt_tokens, reply.completion_tokens)

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

    async def load(self) -> None:
        if self.loaded:
            raise RuntimeError(f"{self.expert_id} loaded twice")
        await asyncio.sleep(self.load_delay_s)
        self.loaded = True
        self.loads += 1

    async def offload(self) -> None:
        self.loaded = False
        self.offloads += 1

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        if not self.loaded:
            raise ExpertError(f"{self.expert_id} called while offloaded")
        return await super().chat(request)
