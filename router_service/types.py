"""Plain value types shared by strategies, experts and the service. No I/O, no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


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

    @staticmethod
    def from_messages(messages: Sequence[Message], **options: Any) -> "Query":
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
    reason: str = ""
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
        if self.reason:
            out["reason"] = self.reason
        if self.details:
            out["details"] = self.details
        if self.fallback:
            out["fallback"] = list(self.fallback)
        return out


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings forwarded to an expert; the wire request is already validated."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class ExpertRequest:
    request_id: str
    messages: list[Message]
    params: GenerationParams


@dataclass
class ExpertReply:
    expert_id: str
    text: str
    finish_reason: str | None = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ExpertDelta:
    """One streamed piece of an expert's answer; the last one carries finish_reason and token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
