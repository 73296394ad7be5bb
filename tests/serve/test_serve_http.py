"""The Ray Serve app over HTTP: routing, streaming, every client error, expert failures."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.unit.helpers import assert_openai_error

pytestmark = pytest.mark.serve


def chat(content="please sum 2 and 3", **overrides):
    body = {"model": "coe", "messages": [{"role": "user", "content": content}]}
    body.update(overrides)
    return body


def post(base, body=None, **kwargs):
    if body is not None:
        kwargs["json"] = body
    return httpx.post(f"{base}/v1/chat/completions", timeout=30, **kwargs)


def test_routed_completion_names_its_expert(fake_app):
    r = post(fake_app, chat())
    assert r.status_code == 200, r.text
    assert r.headers["x-coe-experts"] == "math"
    body = r.json()
    assert body["routing"]["experts"] == ["math"]
    assert body["choices"][0]["message"]["content"] == "[math] please sum 2 and 3"


def test_direct_expert(fake_app):
    r = post(fake_app, chat(model="text"))
    assert r.headers["x-coe-experts"] == "text"
    assert r.json()["choices"][0]["message"]["content"].startswith("[text]")


def test_streaming_over_serve(fake_app):
    with httpx.stream(
        "POST", f"{fake_app}/v1/chat/completions", json=chat("reverse the word", stream=True), timeout=30
    ) as r:
        assert r.status_code == 200
        assert r.headers["x-coe-experts"] == "text"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["routing"]["experts"] == ["text"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "[text] reverse the word"


def test_models_and_health(fake_app):
    models = httpx.get(f"{fake_app}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["coe", "math", "text", "general"]
    assert httpx.get(f"{fake_app}/health").json()["experts"] == {
        e: {"status": "ok", "resident": True} for e in ("math", "text", "general")
    }


@pytest.mark.parametrize(
    "kwargs,status,param",
    [
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 400, None),
        ({"json": {"model": "coe", "messages": "hi"}}, 400, "messages"),
        ({"json": {"model": "coe"}}, 400, "messages"),
        ({"json": {"model": "coe", "messages": []}}, 400, "messages"),
        ({"json": chat(model="nope")}, 404, "model"),
        ({"json": chat(content="z" * 5000)}, 413, None),
        ({"json": chat(max_tokens=100000)}, 400, "max_tokens"),
        ({"json": chat(max_tokens=0)}, 400, "max_tokens"),
        ({"json": chat(routing={"cost_weight": -1})}, 400, "routing.cost_weight"),
    ],
)
def test_client_errors_are_openai_4xx(fake_app, kwargs, status, param):
    r = post(fake_app, **kwargs)
    assert_openai_error(r, status, param=param if param else "__any__")


def test_failing_expert_is_502_timeout_is_504_and_router_stays_up(faulty_app):
    failed = post(faulty_app, chat(model="math"))
    assert assert_openai_error(failed, 502)["code"] == "expert_failed"
    slow = post(faulty_app, chat(model="text"))
    assert assert_openai_error(slow, 504)["code"] == "expert_timeout"
    ok = post(faulty_app, chat(model="general"))
    assert ok.status_code == 200


def test_routed_request_without_fallback_fails_clearly(faulty_app):
    r = post(faulty_app, chat("please sum"))
    assert_openai_error(r, 502)
