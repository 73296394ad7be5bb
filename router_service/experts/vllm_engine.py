"""ExpertBackend over an in-process vLLM `AsyncLLM` engine. vLLM is imported only when an engine starts."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, AsyncIterator

from router_service.errors import ConfigError, ExpertError, ExpertUnavailableError
from router_service.types import ExpertDelta, ExpertReply, ExpertRequest

log = logging.getLogger("coe.expert")


def engine_arg_names() -> set[str]:
    from vllm.engine.arg_utils import AsyncEngineArgs

    return {f.name for f in dataclasses.fields(AsyncEngineArgs)}


def validate_engine_args(prefix: str, engine: dict[str, Any]) -> None:
    """Unknown vLLM engine arguments fail at start-up, naming the field (not deep inside a replica).

    `prefix` locates the expert in its config: "experts[2]." in one application, "" in its own."""
    try:
        names = engine_arg_names()
    except ImportError:  # vLLM not installed in this process: the replica will report it instead
        return
    for key in engine:
        if key == "model":
            raise ConfigError(f"{prefix}engine.model: set the model with {prefix}model")
        if key not in names:
            raise ConfigError(f"{prefix}engine.{key}: not a vLLM engine argument")


class VLLMEngineBackend:
    """Wraps `vllm.v1.engine.async_llm.AsyncLLM`: chat template → token ids → generate."""

    def __init__(self, expert_id: str, model: str, engine_args: dict[str, Any] | None = None) -> None:
        self.expert_id = expert_id
        self.model = model
        self.engine_args = dict(engine_args or {})
        self.engine = None
        self._tokenizer = None
        self.sleeping = False

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
        if self.engine is None or self.sleeping:
            return
        if self._sleep_mode():
            await self.engine.sleep(level=1)
            self.sleeping = True
        else:
            await asyncio.to_thread(self.shutdown)

    async def load(self) -> None:
        if self.sleeping:
            await self.engine.wake_up()
            self.sleeping = False
        elif self.engine is None:
            await asyncio.to_thread(self.start)

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

    def _sampling(self, request: ExpertRequest, output_kind: str):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = request.params
        return SamplingParams(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p,
                              stop=list(p.stop) or None, seed=p.seed,
                              output_kind=getattr(RequestOutputKind, output_kind))

    def _check_ready(self) -> None:
        if self.engine is None:
            raise ExpertUnavailableError(f"expert '{self.expert_id}' has no running engine")

    async def _generate(self, request: ExpertRequest, output_kind: str):
        self._check_ready()
        try:
            prompt = self._prompt(request)
        except Exception as exc:
            raise ExpertError(f"expert '{self.expert_id}' could not render the chat template: {exc}") from exc
        max_len = self.engine.model_config.max_model_len
        if len(prompt["prompt_token_ids"]) + 1 > max_len:
            from router_service.errors import InvalidRequestError

            raise InvalidRequestError(
                f"prompt is {len(prompt['prompt_token_ids'])} tokens; expert '{self.expert_id}' "
                f"accepts at most {max_len - 1}", param="messages", code="context_length_exceeded")
        sampling = self._sampling(request, output_kind)
        # Leave room for the prompt: vLLM rejects max_tokens that overflow the context window.
        sampling.max_tokens = min(sampling.max_tokens, max_len - len(prompt["prompt_token_ids"]))
        try:
            async for output in self.engine.generate(prompt, sampling, request.request_id):
                yield output
        except GeneratorExit:
            raise
        except Exception as exc:
            from vllm.v1.engine.exceptions import EngineDeadError

            if isinstance(exc, EngineDeadError):
                raise ExpertUnavailableError(f"expert '{self.expert_id}' engine died: {exc}") from exc
            raise ExpertError(f"expert '{self.expert_id}' failed: {type(exc).__name__}: {exc}") from exc

    async def chat(self, request: ExpertRequest) -> ExpertReply:
        final = None
        async for output in self._generate(request, "FINAL_ONLY"):
            final = output
        if final is None or not final.outputs:
            raise ExpertError(f"expert '{self.expert_id}' returned no output")
        completion = final.outputs[0]
        return ExpertReply(self.expert_id, completion.text, completion.finish_reason or "stop",
                           len(final.prompt_token_ids or ()), len(completion.token_ids))

    async def stream(self, request: ExpertRequest) -> AsyncIterator[ExpertDelta]:
        completion_tokens = prompt_tokens = 0
        async for output in self._generate(request, "DELTA"):
            completion = output.outputs[0]
            completion_tokens += len(completion.token_ids)
            prompt_tokens = len(output.prompt_token_ids or ()) or prompt_tokens
            finish = (completion.finish_reason or "stop") if output.finished else None
            yield ExpertDelta(completion.text, finish, prompt_tokens, completion_tokens)
