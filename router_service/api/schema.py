"""OpenAI chat-completions wire models, plus the `routing` extension object.

The request declares every top-level field the official `openai` client can send on
`chat.completions.create` (openai 3.63; tests/unit/test_openai_params.py checks the installed client)
and forbids any other, so a typo or an unknown field is a 400 that names it instead of being silently
ignored. Each declared field is honoured, accepted as a no-op (it cannot change the answer), or refused
unless it has its "off" value (400, `param` = the field, `code` = unsupported_parameter).
README "Request parameters" has the table; keep the two in step.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

# Each choice is a full generation on the expert (vLLM runs them as parallel sequences), so n multiplies
# the expert's work; 8 keeps one request from filling a CPU expert's batch.
MAX_CHOICES = 8
# OpenAI's bound, and vLLM's default `max_logprobs` (a larger value would fail inside the engine).
MAX_TOP_LOGPROBS = 20
UNSUPPORTED = "unsupported_parameter"


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class TextContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class RoutingOptions(BaseModel):
    """Per-request routing knobs (`"routing": {...}` in the chat request); config sets the defaults."""

    model_config = ConfigDict(extra="forbid")
    strategy: str | None = Field(default=None, min_length=1, max_length=64)
    cost_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1, le=16)
    # skill strategy: who names the prompt's skills; "llm" needs `router.skill_annotator` (else 400).
    annotator: Literal["llm", "embedding"] | None = None
    # A chosen expert with no running replica: wait for it, or go to a warm one (router.cold_start).
    cold_start: Literal["wait", "fallback"] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool | None = False
    # No-op: obfuscation pads chunks against a network side channel; it never changes the content.
    include_obfuscation: bool | None = None


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    # vLLM's structured decoding always enforces the whole schema, so `strict` changes nothing.
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`text`, `json_object` (any JSON object) or `json_schema` — the latter two by vLLM structured decoding."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_matches_type(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a 'json_schema' object")
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f"'json_schema' is only allowed with type 'json_schema', not '{self.type}'")
        return self

    def structured(self) -> tuple[str | None, str | None]:
        """(GenerationParams.structured, .json_schema). A json_schema without `schema` is any JSON object."""
        if self.type == "text":
            return None, None
        if self.type == "json_object" or self.json_schema is None or self.json_schema.schema_ is None:
            return "json_object", None
        return "json_schema", json.dumps(self.json_schema.schema_, sort_keys=True)


def _absent(value: Any) -> bool:
    return value is None


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


# Fields the client can send that no expert here can honour. Each is accepted only at its "off" value
# (which is what the service does anyway) and refused otherwise: field -> (is off?, why not). "Off" is
# absent/null, or empty where empty means nothing (no tools, no biases) — not `web_search_options: {}`,
# which turns search on with defaults.
REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "tools": (_empty, "the experts have no tool calling"),
    "tool_choice": (lambda v: v in (None, "none"), "the experts have no tool calling"),
    "functions": (_empty, "the experts have no function calling"),
    "function_call": (lambda v: v in (None, "none"), "the experts have no function calling"),
    "parallel_tool_calls": (_absent, "the experts have no tool calling"),
    # Token ids are per tokenizer, the experts' tokenizers differ, and a routed request cannot know
    # which expert (so which tokenizer) will answer.
    "logit_bias": (_empty, "token ids differ between the experts' tokenizers"),
    "audio": (_absent, "the experts produce text only"),
    "modalities": (lambda v: v is None or v == ["text"], "the experts produce text only"),
    "prediction": (_absent, "predicted outputs are not implemented"),
    "reasoning_effort": (lambda v: v in (None, "none"), "the experts are not reasoning models"),
    "verbosity": (_absent, "the experts have no verbosity control"),
    "web_search_options": (_absent, "no expert can search the web"),
    "moderation": (_absent, "this service runs no moderation model"),
    "store": (lambda v: v in (None, False), "completions are not stored"),
    "service_tier": (lambda v: v in (None, "auto", "default"), "this service has one tier"),
}


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)

    # -- honoured: passed to the expert's vLLM engine (see GenerationParams) -----------------------
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    # int64, as OpenAI's; vLLM seeds a torch generator with it (choice i of n uses seed + i).
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1 - MAX_CHOICES)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    routing: RoutingOptions | None = None  # this project's extension

    # -- accepted, no effect on the answer -----------------------------------------------------------
    # End-user / abuse-monitoring ids: the router keeps no per-user state, so they change nothing.
    user: str | None = None
    safety_identifier: str | None = None
    # Tags for stored completions; nothing is stored (`store: true` is refused below).
    metadata: dict[str, str] | None = None
    # Prompt-cache hints: vLLM's prefix cache is automatic, and caching never changes the tokens.
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: dict[str, Any] | None = None

    # -- refused unless "off" (REFUSED says why) -----------------------------------------------------
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    logit_bias: dict[str, float] | None = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: Any = None
    moderation: Any = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator(*REFUSED)
    @classmethod
    def _refuse_unless_off(cls, value: Any, info: ValidationInfo) -> Any:
        field_name = str(info.field_name)  # always set for a field validator
        is_off, why = REFUSED[field_name]
        if not is_off(value):
            raise PydanticCustomError(
                UNSUPPORTED, "'{field}' is not supported: {why}", {"field": field_name, "why": why}
            )
        return value

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if len(value) > 4:
                raise ValueError("at most 4 stop sequences are allowed")
            if any(not s for s in value):
                raise ValueError("stop sequences must not be empty")  # vLLM rejects them
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("'top_logprobs' requires 'logprobs': true")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def stop_sequences(self) -> tuple[str, ...]:
        if isinstance(self.stop, list):
            return tuple(self.stop)
        return (self.stop,) if self.stop else ()


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = "stop"
    logprobs: ChoiceLogprobs | None = None


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=new_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)
    routing: dict[str, Any] | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    routing: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "coe-router"
    description: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
