"""ExpertBackend over an in-process vLLM `AsyncLLM` engine. vLLM is imported only when an engine starts."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from router_service.domain import (
    ExpertChoice,
    ExpertDelta,
    ExpertReply,
    ExpertRequest,
    GenerationParams,
    TokenLogprob,
    TopLogprob,
)
from router_service.errors import CoEError, ExpertError, ExpertUnavailableError, InvalidRequestError
from router_service.experts.errors import ErrorTable, mapped_errors

log = logging.getLogger("coe.expert")


class VLLMEngineBackend:
    """Wraps `vllm.v1.engine.async_llm.AsyncLLM`: chat template → token ids → generate."""

    def __init__(self, expert_id: str, model: str, engine_args: dict[str, Any] | None = None) -> None:
        self.expert_id = expert_id
        self.model = model
        self.engine_args = dict(engine_args or {})
        self.engine: Any = None  # vllm's AsyncLLM once started; vLLM is imported only then
        self._tokenizer: Any = None
        self.sleeping = False
        # One load or offload at a time, so an offload queued behind a load sees the engine it started.
        self._switching = asyncio.Lock()
        self._starting: asyncio.Future | None = None  # the engine start under way, in its thread

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(model=self.model, **self.engine_args)
        self.engine = AsyncLLM.from_engine_args(args)
        self._tokenizer = self.engine.get_tokenizer()
        log.info("expert %s: vLLM engine up for %s", self.expert_id, self.model)

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None

    def _sleep_mode(self) -> bool:
        if not self.engine_args.get("enable_sleep_mode"):
            return False
        from vllm.platforms import current_platform

        return current_platform.is_sleep_mode_available()

    async def offload(self) -> None:
        """Free the expert's memory: vLLM sleep mode (level 1: weights to host RAM, KV cache dropped) where
        the platform has it (CUDA/ROCm/XPU); otherwise — e.g. vLLM CPU — shut the engine down."""
        async with self._switching:
            if self._starting is not None and not self._starting.done():
                # A load whose caller gave up left its engine starting: let it come up, then shut it
                # down, instead of finding no engine now and leaving one running past the budget.
                await asyncio.wait([self._starting])
            if self.engine is None or self.sleeping:
                return
            if self._sleep_mode():
                await self.engine.sleep(level=1)
                self.sleeping = True
            else:
                await asyncio.to_thread(self.shutdown)

    async def load(self) -> None:
        async with self._switching:
            if self.sleeping:
                await self.engine.wake_up()
                self.sleeping = False
            elif self.engine is None:
                if self._starting is None or self._starting.done():
                    self._starting = asyncio.ensure_future(asyncio.to_thread(self.start))
                # Shielded: a caller that stops waiting (residency.switch_timeout_s) cannot stop a
                # thread. The start goes on; the next load joins it, the next offload waits for it.
                await asyncio.shield(self._starting)

    def is_loaded(self) -> bool:
        return self.engine is not None and not self.sleeping

    async def health(self) -> bool:
        if self.engine is None or self.sleeping:
            return False
        try:
            await self.engine.check_health()
            return True
        except Exception:
            return False

    # -- generation ---------------------------------------------------------------------------
    def _prompt(self, request: ExpertRequest) -> dict[str, Any]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        token_ids = self._tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if isinstance(token_ids, dict) or hasattr(token_ids, "input_ids"):
            token_ids = token_ids["input_ids"]
        return {"prompt_token_ids": list(token_ids)}

    @staticmethod
    def _engine_n(params: GenerationParams) -> int:
        """vLLM refuses n > 1 with greedy sampling ("n must be 1 when using greedy sampling"). Greedy
        decoding is deterministic, so n greedy samples are n copies of one: generate once, copy the choice."""
        return 1 if params.temperature < _GREEDY_BELOW else params.n

    def _sampling(self, request: ExpertRequest, output_kind: str):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        p = request.params
        structured = None
        # Whitespace inside the JSON is the engine's setting, not the request's (vLLM reads only
        # `engine: {structured_outputs_config: {disable_any_whitespace: true}}`; see README).
        if p.structured == "json_object":
            structured = StructuredOutputsParams(json_object=True)
        elif p.structured == "json_schema":
            structured = StructuredOutputsParams(json=p.json_schema)
        return SamplingParams(
            n=self._engine_n(p),
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            stop=list(p.stop) or None,
            seed=p.seed,
            presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty,
            # vLLM returns the sampled token's logprob plus this many alternatives.
            logprobs=p.top_logprobs if p.logprobs else None,
            structured_outputs=structured,
            output_kind=getattr(RequestOutputKind, output_kind),
        )

    def _decode(self, token_id: int) -> str:
        return self._tokenizer.decode([token_id])

    def _check_ready(self) -> None:
        if self.engine is None:
            raise ExpertUnavailableError(f"expert '{self.expert_id}' has no running engine")

    def _errors(self, request: ExpertRequest) -> ErrorTable:
        """vLLM's errors → ours, for one request: its client errors (a bad json_schema, a sampling value it
        refuses) are the client's (400); a dead engine is unavailable (503); anything else is a 502."""
        from vllm.v1.engine.exceptions import EngineDeadError

        def rejected(expert_id: str, exc: BaseException) -> CoEError:
            param = getattr(exc, "parameter", None) or ("response_format" if request.params.structured else None)
            return InvalidRequestError(
                f"expert '{expert_id}' rejected the request: {exc}", param=param, code="invalid_value"
            )

        def died(expert_id: str, exc: BaseException) -> CoEError:
            return ExpertUnavailableError(f"expert '{expert_id}' engine died: {exc}")

        return ((_vllm_client_errors(), rejected), (EngineDeadError, died))

    async def _generate(self, request: ExpertRequest, output_kind: str):
        self._check_ready()
        try:
            prompt = self._prompt(request)
        except Exception as exc:
            raise ExpertError(f"expert '{self.expert_id}' could not render the chat template: {exc}") from exc
        max_len = self.engine.model_config.max_model_len
        if len(prompt["prompt_token_ids"]) + 1 > max_len:
            raise InvalidRequestError(
                f"prompt is {len(prompt['prompt_token_ids'])} tokens; expert '{self.expert_id}' "
                f"accepts at most {max_len - 1}",
                param="messages",
                code="context_length_exceeded",
            )
        errors = self._errors(request)
        with mapped_errors(self.expert_id, errors):
            sampling = self._sampling(request, output_kind)
        # Leave room for the prompt: vLLM rejects max_tokens that overflow the context window.
        sampling.max_tokens = min(sampling.max_tokens, max_len - len(prompt["prompt_token_ids"]))
        with mapped_errors(self.expert_id, errors):
            async for output in self.engine.generate(prompt, sampling, request.request_id):
                yield output

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        final = None
        async for output in self._generate(request, "FINAL_ONLY"):
            final = output
        if final is None or not final.outputs:
            raise ExpertError(f"expert '{self.expert_id}' returned no output")
        p = request.params
        generated = sorted(final.outputs, key=lambda c: c.index)
        choices = [ExpertChoice(c.text, c.finish_reason or "stop", _logprobs(c, p, self._decode)) for c in generated]
        copies = p.n if self._engine_n(p) == 1 else 1
        choices = [dataclasses.replace(c) for _ in range(copies) for c in choices]
        if len(choices) != p.n:
            raise ExpertError(f"expert '{self.expert_id}' returned {len(choices)} choices, {p.n} asked")
        first, *more = choices
        return ExpertReply(
            self.expert_id,
            first.text,
            first.finish_reason,
            len(final.prompt_token_ids or ()),
            copies * sum(len(c.token_ids) for c in generated),
            first.logprobs,
            more,
        )

    async def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        p = request.params
        copies = p.n if self._engine_n(p) == 1 else 1
        completion_tokens = prompt_tokens = 0
        async for output in self._generate(request, "DELTA"):
            prompt_tokens = len(output.prompt_token_ids or ()) or prompt_tokens
            for completion in output.outputs:  # with n > 1, one choice's new tokens at a time
                completion_tokens += copies * len(completion.token_ids)
                finish = (completion.finish_reason or "stop") if completion.finished() else None
                logprobs = _logprobs(completion, p, self._decode)
                for index in range(completion.index, completion.index + copies):
                    yield ExpertDelta(completion.text, finish, prompt_tokens, completion_tokens, index, logprobs)


def _vllm_client_errors() -> tuple[type[Exception], ...]:
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # older vLLM (the GPU extra allows >= 0.11) raises ValueError for a bad request
        return (ValueError,)
    return (VLLMClientError,)


# vLLM's own threshold (sampling_params._SAMPLING_EPS): below it, sampling is greedy.
_GREEDY_BELOW = 1e-5
# JSON has no -inf; OpenAI-compatible servers (vLLM's own included) clamp to this.
_MIN_LOGPROB = -9999.0


def _logprobs(completion: Any, params: GenerationParams, decode: Callable[[int], str]) -> list[TokenLogprob] | None:
    """vLLM's per-position {token id: Logprob} dicts (the sampled token plus the top alternatives) in
    OpenAI's shape. `top_logprobs` are the `params.top_logprobs` best-ranked tokens at each position."""
    if not params.logprobs or completion.logprobs is None:
        return None
    out = []
    for token_id, position in zip(completion.token_ids, completion.logprobs):
        position = position or {}
        ranked = sorted(position.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else float("inf"))
        top = []
        for alt_id, alt in ranked[: params.top_logprobs]:
            alt_token = alt.decoded_token if alt.decoded_token is not None else decode(alt_id)
            top.append(TopLogprob(alt_token, max(alt.logprob, _MIN_LOGPROB), _utf8(alt_token)))
        chosen = position.get(token_id)
        token = chosen.decoded_token if chosen is not None and chosen.decoded_token is not None else decode(token_id)
        logprob = max(chosen.logprob, _MIN_LOGPROB) if chosen is not None else _MIN_LOGPROB
        out.append(TokenLogprob(token, logprob, _utf8(token), tuple(top)))
    return out


def _utf8(token: str) -> tuple[int, ...]:
    return tuple(token.encode("utf-8", errors="replace"))
