"""Check the OpenAI sampling parameters against a real vLLM engine, without Ray (about 2 minutes on CPU).

    VLLM_CPU_KVCACHE_SPACE=1 python scripts/check_openai_params.py [--model-dir /tmp/coe-tiny]

Builds a `tiny-random` model (random weights, character tokenizer: the text is gibberish, the mechanics
are real), serves it with `deployments.vllm_backend.VLLMEngineBackend` behind the real FastAPI app and
RouterService (plus a fake second expert for the several-experts rules), and drives it with the
official `openai` client: n, logprobs, stop, seed, penalties, response_format, refusals, streaming.
Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: object = "") -> None:
    RESULTS.append((name, bool(ok), str(detail)))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {str(detail)[:300]}", flush=True)


async def run(model_dir: Path) -> None:
    import httpx
    import openai

    from deployments.model_files import ensure_model
    from deployments.vllm_backend import VLLMEngineBackend
    from router_service.api.app import create_app
    from router_service.config.service import parse_service_config
    from router_service.experts.fake import FakeExpertBackend
    from router_service.routing.embedding import HashingEmbedder
    from router_service.serving.assembly import build_service

    path = ensure_model(model_dir, "tiny-random")
    config = parse_service_config(
        {
            "experts": [
                {"id": "tiny", "model": str(path), "timeout_s": 120},
                {"id": "echo", "model": "org/echo", "timeout_s": 10},
            ],
            "router": {"strategy": "keyword", "default_expert": "tiny"},
            "server": {"max_tokens_limit": 200, "default_max_tokens": 16},
        }
    )
    backend = VLLMEngineBackend("tiny", str(path), {"dtype": "float32", "max_model_len": 256})
    started = time.perf_counter()
    backend.start()
    print(f"engine up in {time.perf_counter() - started:.0f}s", flush=True)
    service = build_service(
        config, {"tiny": backend, "echo": FakeExpertBackend("echo")}, embedder_factory=lambda name: HashingEmbedder()
    )
    app = create_app(lambda: service, config.server)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://local", timeout=120)
    client = openai.AsyncOpenAI(base_url="http://local/v1", api_key="x", http_client=http, max_retries=0)
    messages = [{"role": "user", "content": "hello"}]

    async def ask(**kw):
        kw.setdefault("max_tokens", 12)
        return await client.chat.completions.create(model="tiny", messages=messages, **kw)

    async def refused(param: str, **kw) -> None:
        try:
            await ask(**kw)
        except openai.BadRequestError as exc:
            check(f"400 naming {param}", exc.body.get("param") == param, exc.body)
        else:
            check(f"400 naming {param}", False, "answered 200")

    try:
        r = await ask(n=2, temperature=0.8, seed=7)
        check(
            "n=2 sampled gives 2 choices",
            [c.index for c in r.choices] == [0, 1],
            [c.message.content for c in r.choices],
        )
        r = await ask(n=3)
        check(
            "n=3 greedy gives 3 equal choices",
            len({c.message.content for c in r.choices}) == 1 and len(r.choices) == 3,
            f"usage={r.usage.completion_tokens}",
        )
        r = await ask(max_tokens=5, logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        check(
            "logprobs per token with 2 alternatives",
            len(content) == r.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content),
            content[0].model_dump(),
        )
        full = (await ask(max_tokens=16, temperature=1.0, seed=42)).choices[0].message.content
        stop = full[5:7]  # a seeded sample: varied characters, so the cut is visible
        cut = (await ask(max_tokens=16, temperature=1.0, seed=42, stop=[stop])).choices[0]
        check(
            "stop truncates",
            cut.message.content == full[: full.index(stop)] and cut.finish_reason == "stop",
            f"{full!r} stop={stop!r} -> {cut.message.content!r}",
        )
        a, b, c = [(await ask(temperature=1.0, seed=s)).choices[0].message.content for s in (42, 42, 43)]
        check("seed repeats a sampled text", a == b and a != c, [a, b, c])
        r = await ask(presence_penalty=1.5, frequency_penalty=-1.0)
        check("penalties accepted", r.choices[0].finish_reason in ("stop", "length"), r.choices[0].message.content)
        schema = {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["ok", "n"],
            "additionalProperties": False,
        }
        r = await ask(
            max_tokens=60, response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": schema}}
        )
        parsed = json.loads(r.choices[0].message.content)
        check("json_schema object", set(parsed) == {"ok", "n"} and isinstance(parsed["ok"], bool), parsed)
        r = await ask(
            max_tokens=20,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "e", "schema": {"type": "string", "enum": ["yes", "no"]}},
            },
        )
        check(
            "json_schema enum", json.loads(r.choices[0].message.content) in ("yes", "no"), r.choices[0].message.content
        )
        r = await ask(
            max_tokens=60,
            temperature=1.0,
            seed=3,
            n=2,
            response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": schema}},
        )
        check(
            "json_schema with n=2 sampled",
            all(set(json.loads(c.message.content)) == {"ok", "n"} for c in r.choices),
            [c.message.content for c in r.choices],
        )
        r = await ask(max_tokens=60, response_format={"type": "json_object"})
        check(
            "json_object runs (random weights may hit max_tokens)",
            True,
            (r.choices[0].finish_reason, r.choices[0].message.content),
        )
        try:
            await ask(
                response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "nonsense"}}}
            )
            check("bad schema is a 400", False, "answered 200")
        except openai.BadRequestError as exc:
            check("bad schema is a 400 naming response_format", exc.body.get("param") == "response_format", exc.body)
        await refused("tools", tools=[{"type": "function", "function": {"name": "f"}}])
        await refused("temprature", extra_body={"temprature": 1})
        await refused("top_logprobs", top_logprobs=2)
        try:
            await client.chat.completions.create(
                model="coe", messages=messages, n=2, temperature=0.5, extra_body={"routing": {"top_k": 2}}
            )
            check("n with several experts is a 400", False, "answered 200")
        except openai.BadRequestError as exc:
            check("n with several experts is a 400 naming n", exc.body.get("param") == "n", exc.body)
        stream = await ask(
            n=2, temperature=0.8, seed=5, logprobs=True, stream=True, stream_options={"include_usage": True}
        )
        texts, finished, logprob_tokens, usage = {}, {}, 0, None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                logprob_tokens += len(choice.logprobs.content) if choice.logprobs and choice.logprobs.content else 0
                if choice.finish_reason:
                    finished[choice.index] = choice.finish_reason
        check(
            "stream n=2 with logprobs",
            sorted(finished) == [0, 1] and logprob_tokens == usage.completion_tokens,
            f"texts={texts} finished={finished} logprob tokens={logprob_tokens} usage={usage}",
        )
    finally:
        await http.aclose()
        backend.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default="/tmp/coe-tiny-random")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    asyncio.run(run(Path(args.model_dir)))
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
