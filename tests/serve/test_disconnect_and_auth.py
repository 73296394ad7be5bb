"""On real Serve: a client that disconnects mid-stream stops the expert; API keys guard every endpoint."""

import time

import httpx
import pytest

from tests.serve.conftest import deploy
from tests.unit.helpers import assert_openai_error, config_dict

pytestmark = pytest.mark.serve


def test_client_disconnect_cancels_expert_generation(ray_serve):
    from ray import serve

    slow_long_answer = {"answer_text": "word " * 200, "chunk_delay_s": 0.05}  # 80 chunks of 4 chars at 64 tokens: ~4 s
    base = deploy(ray_serve, config_dict(), {"text": slow_long_answer}, name="disconnect", route_prefix="/disconnect")
    body = {"model": "text", "messages": [{"role": "user", "content": "go"}], "stream": True, "max_tokens": 64}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    # The connection is closed after 3 events, long before the 10 s the answer would take.
    handle = serve.get_deployment_handle("expert-text", app_name="disconnect")
    deadline = time.monotonic() + 20
    while handle.stats.remote().result()["cancelled"] < 1:
        assert time.monotonic() < deadline, "expert kept generating after the client left"
        time.sleep(0.2)


def test_api_keys_over_serve(ray_serve):
    args = config_dict()
    args["server"]["api_keys"] = ["k-serve"]
    base = deploy(ray_serve, args, {}, name="auth", route_prefix="/auth")
    body = {"model": "coe", "messages": [{"role": "user", "content": "sum 1 2"}]}
    assert_openai_error(httpx.post(f"{base}/v1/chat/completions", json=body), 401)
    assert_openai_error(httpx.get(f"{base}/v1/models", headers={"authorization": "Bearer wrong"}), 401)
    ok = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"authorization": "Bearer k-serve"})
    assert ok.status_code == 200
    assert httpx.get(f"{base}/health").status_code == 200
