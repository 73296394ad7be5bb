"""OpenAI sampling parameters reach real vLLM CPU experts through the stack, driven by the official client.

Asked directly (model=<expert id>) of the default deployment's real generalist, SmolLM2-135M-Instruct (the
first expert in /v1/models where it is absent); the assertions hold for any expert and prompt.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

PROMPT = [{"role": "user", "content": "What is 12+30?"}]


@pytest.fixture(scope="module")
def expert(stack) -> str:
    experts = [m["id"] for m in httpx.get(f"{stack}/v1/models").json()["data"] if m["id"] != "coe"]
    assert experts
    return "general" if "general" in experts else experts[0]


def test_n_gives_n_choices(openai_client, expert):
    sampled = openai_client.chat.completions.create(
        model=expert, messages=PROMPT, max_tokens=8, n=2, temperature=0.8, seed=1
    )
    assert [c.index for c in sampled.choices] == [0, 1]
    assert sampled.usage.completion_tokens >= 2
    # Greedy: vLLM refuses n > 1 at temperature 0, so the expert generates once and copies the choice.
    greedy = openai_client.chat.completions.create(model=expert, messages=PROMPT, max_tokens=8, n=2)
    assert len(greedy.choices) == 2
    assert greedy.choices[0].message.content == greedy.choices[1].message.content


def test_logprobs_per_token(openai_client, expert):
    completion = openai_client.chat.completions.create(
        model=expert, messages=PROMPT, max_tokens=6, logprobs=True, top_logprobs=2
    )
    content = completion.choices[0].logprobs.content
    assert len(content) == completion.usage.completion_tokens >= 1
    for token in content:
        assert token.logprob <= 0.0
        assert len(token.top_logprobs) == 2
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
        assert token.top_logprobs[0].logprob >= token.logprob - 1e-4  # greedy: the chosen token is the best


def test_stop_truncates_the_text(openai_client, expert):
    full = openai_client.chat.completions.create(model=expert, messages=PROMPT, max_tokens=16)
    text = full.choices[0].message.content
    assert len(text) >= 2, f"need a longer greedy answer to cut: {text!r}"
    stop = text[1]
    cut = openai_client.chat.completions.create(model=expert, messages=PROMPT, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_seed_repeats_a_sampled_answer(openai_client, expert):
    def ask():
        return (
            openai_client.chat.completions.create(
                model=expert, messages=PROMPT, max_tokens=12, temperature=1.0, seed=1234
            )
            .choices[0]
            .message.content
        )

    assert ask() == ask()


def test_penalties_are_accepted(openai_client, expert):
    completion = openai_client.chat.completions.create(
        model=expert, messages=PROMPT, max_tokens=8, presence_penalty=1.0, frequency_penalty=0.5
    )
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_json_schema_constrains_the_answer(openai_client, expert):
    schema = {"type": "string", "enum": ["yes", "no"]}
    completion = openai_client.chat.completions.create(
        model=expert,
        messages=PROMPT,
        max_tokens=32,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert json.loads(completion.choices[0].message.content) in ("yes", "no")


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
        ({"logit_bias": {"5": 10}}, "logit_bias"),
        ({"store": True}, "store"),
        ({"extra_body": {"temprature": 0.5}}, "temprature"),
    ],
)
def test_refused_parameters_name_the_field(openai_client, expert, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=expert, messages=PROMPT, max_tokens=4, **kwargs)
    assert info.value.body["param"] == param


def test_bad_json_schema_is_a_400_from_the_expert(openai_client, expert):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model=expert,
            messages=PROMPT,
            max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
        )
    assert info.value.body["param"] == "response_format"
