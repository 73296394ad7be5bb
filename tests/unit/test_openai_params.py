"""Every chat-completions parameter the official `openai` client can send is honoured, accepted as a
no-op, or refused with a 400 whose `param` names it — over the real FastAPI app with fake experts (no Ray)."""

from __future__ import annotations

import inspect
import json

import openai
import pytest

from router_service.api.schema import ChatCompletionRequest
from router_service.domain import GenerationParams

from .helpers import assert_openai_error, make_client, make_service

pytestmark = pytest.mark.anyio

URL = "/v1/chat/completions"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def setup():
    service, backends = make_service()
    async with make_client(service) as client:
        yield client, backends


def chat(**overrides):
    body = {"model": "math", "messages": [{"role": "user", "content": "add 2 sum 3"}]}
    body.update(overrides)
    return body


def sent_params(backends, expert: str = "math") -> GenerationParams:
    assert backends[expert].requests, f"nothing reached {expert}"
    return backends[expert].requests[-1].params


# Values that would change the answer, which no expert here can honour.
REFUSED = [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
    ("tool_choice", "auto"),
    ("tool_choice", {"type": "function", "function": {"name": "f"}}),
    ("functions", [{"name": "f", "parameters": {}}]),
    ("function_call", "auto"),
    ("parallel_tool_calls", True),
    ("parallel_tool_calls", False),
    ("logit_bias", {"50256": -100}),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("modalities", ["text", "audio"]),
    ("modalities", ["audio"]),
    ("prediction", {"type": "content", "content": "x"}),
    ("reasoning_effort", "high"),
    ("verbosity", "low"),
    ("web_search_options", {}),  # {} turns web search on with its defaults
    ("moderation", {"model": "omni-moderation-latest"}),
    ("store", True),
    ("service_tier", "priority"),
    ("service_tier", "flex"),
]


@pytest.mark.parametrize("field,value", REFUSED, ids=[f"{f}={v!r}"[:40] for f, v in REFUSED])
async def test_refused_parameter_is_400_naming_it(setup, field, value):
    client, backends = setup
    for model in ("math", "coe"):
        r = await client.post(URL, json=chat(model=model, **{field: value}))
        error = assert_openai_error(r, 400, param=field)
        assert error["code"] == "unsupported_parameter"
        assert field in error["message"]
    assert all(b.calls == 0 for b in backends.values())


@pytest.mark.parametrize("field,value", REFUSED[:4], ids=[f for f, _ in REFUSED[:4]])
async def test_refused_parameter_in_a_batch_item_fails_that_item_only(setup, field, value):
    client, _ = setup
    r = await client.post("/v1/batch", json={"requests": [chat(**{field: value}), chat()]})
    assert r.status_code == 200
    bad, good = r.json()["results"]
    assert bad["status"] == 400 and bad["error"]["param"] == field
    assert good["status"] == 200


# The "off" value of each refused field, and every no-op field, changes nothing.
OFF_AND_NO_OP = [
    ("tools", []),
    ("tool_choice", "none"),
    ("functions", []),
    ("function_call", "none"),
    ("logit_bias", {}),
    ("modalities", ["text"]),
    ("reasoning_effort", "none"),
    ("store", False),
    ("service_tier", "auto"),
    ("service_tier", "default"),
    ("audio", None),
    ("prediction", None),
    ("web_search_options", None),
    ("moderation", None),
    ("verbosity", None),
    ("parallel_tool_calls", None),
    ("user", "user-1234"),
    ("safety_identifier", "hash-abc"),
    ("metadata", {"team": "a", "run": "7"}),
    ("prompt_cache_key", "k1"),
    ("prompt_cache_retention", "24h"),
    ("prompt_cache_options", {"mode": "implicit"}),
    ("stream_options", {"include_obfuscation": True}),
]


@pytest.mark.parametrize("field,value", OFF_AND_NO_OP, ids=[f"{f}={v!r}"[:40] for f, v in OFF_AND_NO_OP])
async def test_off_values_and_no_op_fields_are_accepted_and_change_nothing(setup, field, value):
    client, backends = setup
    plain = await client.post(URL, json=chat())
    r = await client.post(URL, json=chat(**{field: value}))
    assert r.status_code == 200, r.text
    assert r.json()["choices"] == plain.json()["choices"]
    assert backends["math"].requests[0].params == backends["math"].requests[1].params


async def test_unknown_top_level_field_is_400_naming_it(setup):
    client, backends = setup
    r = await client.post(URL, json=chat(temprature=0.5))
    error = assert_openai_error(r, 400, param="temprature")
    assert error["code"] == "unknown_parameter" and "temprature" in error["message"]
    r = await client.post(URL, json=chat(stream_options={"include_usage": True, "colour": 1}))
    assert_openai_error(r, 400, param="stream_options.colour")
    assert backends["math"].calls == 0


async def test_the_routing_extension_still_works(setup):
    client, _ = setup
    r = await client.post(URL, json=chat(model="coe", routing={"strategy": "keyword", "top_k": 1}))
    assert r.status_code == 200, r.text
    assert r.json()["routing"]["strategy"] == "keyword"


def test_every_parameter_of_the_openai_client_is_declared():
    """A parameter added to the client must be classified here (honoured, no-op or refused), not fail as
    unknown. Fails when the installed `openai` grows a parameter this schema does not know."""
    from openai.resources.chat.completions import Completions

    client_params = set(inspect.signature(Completions.create).parameters)
    client_params -= {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
    assert client_params, "could not read the client's parameters"
    missing = client_params - set(ChatCompletionRequest.model_fields)
    assert not missing, f"openai parameters the request schema does not declare: {sorted(missing)}"


async def test_honoured_parameters_reach_the_expert(setup):
    client, backends = setup
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    r = await client.post(
        URL,
        json=chat(
            temperature=0.7,
            top_p=0.9,
            seed=11,
            stop=["x", "yy"],
            max_completion_tokens=12,
            n=3,
            presence_penalty=0.5,
            frequency_penalty=-1.5,
            logprobs=True,
            top_logprobs=4,
            response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
        ),
    )
    assert r.status_code == 200, r.text
    assert sent_params(backends) == GenerationParams(
        max_tokens=12,
        temperature=0.7,
        top_p=0.9,
        stop=("x", "yy"),
        seed=11,
        n=3,
        presence_penalty=0.5,
        frequency_penalty=-1.5,
        logprobs=True,
        top_logprobs=4,
        structured="json_schema",
        json_schema='{"properties": {"a": {"type": "integer"}}, "required": ["a"], "type": "object"}',
    )


async def test_defaults_when_nothing_is_set(setup):
    client, backends = setup
    assert (await client.post(URL, json=chat())).status_code == 200
    assert sent_params(backends) == GenerationParams(max_tokens=16)  # helpers: server.default_max_tokens


@pytest.mark.parametrize(
    "response_format,structured",
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, "json_object"),
        ({"type": "json_schema", "json_schema": {"name": "any"}}, "json_object"),  # no schema: any JSON object
    ],
)
async def test_response_format_modes(setup, response_format, structured):
    client, backends = setup
    r = await client.post(URL, json=chat(response_format=response_format))
    assert r.status_code == 200, r.text
    assert sent_params(backends).structured == structured
    assert sent_params(backends).json_schema is None


@pytest.mark.parametrize(
    "overrides,param",
    [
        ({"n": 0}, "n"),
        ({"n": 9}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),  # needs logprobs: true
        ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -2.1}, "frequency_penalty"),
        ({"seed": 2**63}, "seed"),
        ({"stop": ["a", ""]}, "stop"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "json_object", "json_schema": {"name": "x"}}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!"}}},
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "nope"}}},
            "response_format.json_schema.schema",
        ),
    ],
)
async def test_out_of_range_honoured_values_are_400_naming_the_field(setup, overrides, param):
    client, backends = setup
    assert_openai_error(await client.post(URL, json=chat(**overrides)), 400, param=param)
    assert backends["math"].calls == 0


async def test_n_choices(setup):
    client, _ = setup
    body = (await client.post(URL, json=chat(n=3, temperature=0.8, seed=5))).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in body["choices"]]
    assert len(set(texts)) > 1  # sampled: choice i uses seed + i
    assert body["usage"]["completion_tokens"] == sum(len(t.split()) for t in texts)
    greedy = (await client.post(URL, json=chat(n=2))).json()
    assert len({c["message"]["content"] for c in greedy["choices"]}) == 1  # temperature 0 is greedy


async def test_seed_repeats_a_sampled_answer(setup):
    client, _ = setup

    async def text(**kw):
        return (await client.post(URL, json=chat(temperature=1.0, **kw))).json()["choices"][0]["message"]["content"]

    assert await text(seed=3) == await text(seed=3)
    assert {await text(seed=s) for s in range(6)} != {await text(seed=3)}


async def test_stop_truncates(setup):
    client, _ = setup
    body = (await client.post(URL, json=chat(stop=" sum"))).json()
    assert body["choices"][0]["message"]["content"] == "[math] add 2"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_logprobs_have_the_openai_shape(setup):
    client, _ = setup
    body = (await client.post(URL, json=chat(logprobs=True, top_logprobs=2))).json()
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == choice["message"]["content"]
    for token in content:
        assert set(token) == {"token", "logprob", "bytes", "top_logprobs"}
        assert token["bytes"] == list(token["token"].encode())
        assert len(token["top_logprobs"]) == 2
        assert all(set(t) == {"token", "logprob", "bytes"} for t in token["top_logprobs"])
    plain = (await client.post(URL, json=chat(logprobs=True))).json()["choices"][0]["logprobs"]["content"]
    assert plain and all(t["top_logprobs"] == [] for t in plain)
    assert "logprobs" not in (await client.post(URL, json=chat())).json()["choices"][0]


async def test_streamed_n_choices_and_logprobs(setup):
    client, _ = setup
    body = chat(
        n=2, temperature=0.5, seed=1, logprobs=True, top_logprobs=1, stream=True, stream_options={"include_usage": True}
    )
    async with client.stream("POST", URL, json=body) as r:
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert [c["index"] for c in chunks[0]["choices"]] == [0, 1]
    texts, finished, logprobs = {0: "", 1: ""}, set(), {0: 0, 1: 0}
    for chunk in chunks[1:]:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
            logprobs[choice["index"]] += len((choice.get("logprobs") or {}).get("content") or [])
            if choice.get("finish_reason"):
                finished.add(choice["index"])
    assert finished == {0, 1} and all(texts.values()) and all(logprobs.values())
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("overrides,param", [({"n": 2}, "n"), ({"logprobs": True}, "logprobs")])
async def test_single_stream_parameters_are_refused_with_several_experts(setup, overrides, param):
    client, backends = setup
    body = chat(model="coe", routing={"top_k": 2}, temperature=0.5, **overrides)
    error = assert_openai_error(await client.post(URL, json=body), 400, param=param)
    assert error["code"] == "unsupported_parameter"
    assert all(b.calls == 0 for b in backends.values())


async def test_sampling_and_response_format_apply_to_every_aggregated_expert(setup):
    client, backends = setup
    r = await client.post(
        URL,
        json=chat(
            model="coe",
            routing={"top_k": 2},
            temperature=0.3,
            seed=4,
            stop=["!"],
            response_format={"type": "json_object"},
        ),
    )
    assert r.status_code == 200, r.text
    called = [b for b in backends.values() if b.calls]
    assert len(called) == 2
    for backend in called:
        p = backend.requests[-1].params
        assert (p.temperature, p.seed, p.stop, p.structured, p.n) == (0.3, 4, ("!",), "json_object", 1)


async def test_the_official_client_parses_n_choices_and_logprobs():
    service, _ = make_service()
    app_client = make_client(service)
    client = openai.AsyncOpenAI(base_url="http://test/v1", api_key="x", http_client=app_client, max_retries=0)
    completion = await client.chat.completions.create(
        model="math",
        messages=[{"role": "user", "content": "add 2 sum 3"}],
        n=2,
        temperature=0.9,
        seed=2,
        logprobs=True,
        top_logprobs=3,
        presence_penalty=0.1,
        user="u",
        metadata={"k": "v"},
    )
    assert len(completion.choices) == 2
    token = completion.choices[1].logprobs.content[0]
    assert len(token.top_logprobs) == 3 and token.bytes == list(token.token.encode())
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="coe",
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": "f"}}],
        )
    assert info.value.body["param"] == "tools"
    await app_client.aclose()
