"""Fuzz the HTTP API of the real Serve app (fake experts) with hypothesis-generated requests.

2,000+ requests, bounded in count; the property: never a 5xx, every error an OpenAI error body, and
the service healthy afterwards.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.serve

json_scalars = (
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
roles = st.sampled_from(["user", "system", "assistant", "developer", "tool", "wizard", ""]) | st.text(max_size=8)
messages = (
    st.lists(
        st.fixed_dictionaries(
            {"role": roles}, optional={"content": st.text(max_size=120) | json_values, "name": json_values}
        ),
        max_size=4,
    )
    | json_values
)
routing = st.fixed_dictionaries(
    {},
    optional={
        "strategy": st.sampled_from(["keyword", "fixed", "category", "nope"]) | json_values,
        "cost_weight": st.floats(-2, 3) | json_values,
        "top_k": st.integers(-2, 6) | json_values,
        "extra": json_values,
    },
)
chat_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["coe", "math", "text", "general", "gpt-4", ""]) | json_values,
        "messages": messages,
        "max_tokens": st.integers(-5, 10**6) | json_values,
        "max_completion_tokens": st.integers(-5, 200) | json_values,
        "temperature": st.floats(-1, 3) | json_values,
        "top_p": st.floats(-1, 2) | json_values,
        "n": st.integers(-1, 3) | json_values,
        "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": json_values,
        "routing": routing | json_values,
        "seed": json_values,
    },
)
requests = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/chat/completions"), chat_bodies.map(json.dumps)),
    st.tuples(st.just("POST"), st.just("/v1/chat/completions"), json_values.map(json.dumps)),
    st.tuples(
        st.just("POST"), st.just("/v1/chat/completions"), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
    ),
    st.tuples(
        st.just("POST"),
        st.just("/v1/batch"),
        st.fixed_dictionaries({"requests": st.lists(chat_bodies, max_size=3)}).map(json.dumps),
    ),
    st.tuples(
        st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]),
        st.sampled_from(["/v1/chat/completions", "/v1/models", "/health", "/v1/batch", "/nope"]),
        st.just(""),
    ),
)


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}
        assert set(body["error"]) == {"message", "type", "param", "code"}


def test_fuzzed_requests_never_5xx_and_errors_are_openai_shaped(fake_app):
    sent = {"n": 0}
    client = httpx.Client(base_url=fake_app, timeout=30)

    @settings(
        max_examples=2000,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(requests)
    def one(request):
        method, path, body = request
        response = client.request(
            method,
            path,
            content=body.encode("utf-8", "surrogatepass") if body else None,
            headers={"content-type": "application/json"},
        )
        sent["n"] += 1
        _check(response)

    one()
    client.close()
    assert sent["n"] >= 2000
    health = httpx.get(f"{fake_app}/health", timeout=10).json()
    assert health["status"] == "ok"
