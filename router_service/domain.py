"""Plain value types shared by strategies, experts and the service. No I/O, no heavy imports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Query:
    """What a strategy sees of one request: its text and the per-request routing options.

    `embedding` may be filled in by the caller (e.g. a micro-batcher) so strategies do not re-embed;
    it must be the embedding of `text` alone, so a decision never depends on other requests.
    """

    text: str
    messages: tuple[Message, ...] = ()
    strategy: str | None = None
    cost_weight: float | None = None
    top_k: int | None = None
    embedding: Any = None
    # Skill keywords named by the router's served LLM annotator (`router.skill_annotator`); None → the
    # skill strategy's own annotator. Like `embedding`, they come from this prompt alone.
    skills: tuple[str, ...] | None = None

    @staticmethod
    def from_messages(messages: Sequence[Message], **options: Any) -> Query:
        # Route on what the user asked: the last user turn, with earlier user turns as context.
        user_turns = [m.content for m in messages if m.role == "user"]
        text = user_turns[-1] if user_turns else (messages[-1].content if messages else "")
        return Query(text=text, messages=tuple(messages), **options)


@dataclass(frozen=True)
class ExpertCard:
    """What the router knows about one expert without talking to it."""

    id: str
    skills: tuple[str, ...] = ()
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0
    generalist: bool = False
    description: str = ""

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_cost_per_mtok + completion_tokens * self.output_cost_per_mtok) / 1e6


@dataclass
class RoutingDecision:
    """The chosen experts, best first, and why. `details` is strategy-specific and goes to the client."""

    expert_ids: list[str]
    scores: dict[str, float]
    strategy: str
    details: dict[str, Any] = field(default_factory=dict)
    fallback: list[dict[str, Any]] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return self.expert_ids[0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "experts": list(self.expert_ids),
            "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
        }
        if self.details:
            out["details"] = self.details
        if self.fallback:
            out["fallback"] = list(self.fallback)
        return out


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings forwarded to an expert; the wire request is already validated.

    Every field is plain data (no dicts), so the params stay hashable and cross Ray unchanged.
    """

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1  # choices to generate; with a seed, choice i uses seed + i (vLLM's rule)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False  # per-token logprobs of the sampled tokens
    top_logprobs: int = 0  # ... plus this many alternatives per position (needs logprobs)
    # Structured output: None (free text), "json_object" (any JSON object) or "json_schema" (`json_schema`
    # holds the schema as JSON text).
    structured: str | None = None
    json_schema: str | None = None


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its logprob and, when asked, the most likely alternatives (OpenAI's shape)."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass
class ExpertChoice:
    """One of the n answers to a request."""

    text: str
    finish_reason: str | None = "stop"
    logprobs: list[TokenLogprob] | None = None


@dataclass
class ExpertRequest:
    request_id: str
    messages: list[Message]
    params: GenerationParams


@dataclass
class ExpertReply:
    """An expert's answer. `text`/`finish_reason`/`logprobs` are choice 0 (what aggregators read);
    `more_choices` holds choices 1..n-1 when `params.n > 1`. `completion_tokens` counts all choices."""

    expert_id: str
    text: str
    finish_reason: str | None = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    more_choices: list[ExpertChoice] = field(default_factory=list)

    @property
    def choices(self) -> list[ExpertChoice]:
        return [ExpertChoice(self.text, self.finish_reason, self.logprobs), *self.more_choices]


@dataclass
class ExpertDelta:
    """One streamed piece of choice `index` of an expert's answer.

    A choice's last delta carries its finish_reason; token counts are running totals over all choices, so
    the stream's last delta carries the request's totals. With n > 1 the stream ends when every choice has
    finished."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    index: int = 0
    logprobs: list[TokenLogprob] | None = None
