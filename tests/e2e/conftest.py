"""Starts the real stack with the user's own command: `serve run deployments/coe.yaml`.

Ray Serve + router + vLLM CPU experts, reached over HTTP. One start per test session (about
2-4 minutes on 2 cores; the first run on a fresh machine also trains the expert zoo).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = os.environ.get("COE_E2E_CONFIG", "deployments/coe.yaml")
BASE_URL = "http://127.0.0.1:8000"
START_TIMEOUT_S = float(os.environ.get("COE_E2E_START_TIMEOUT_S", "1500"))


def _serve_binary() -> str:
    candidate = Path(sys.executable).with_name("serve")
    return str(candidate) if candidate.exists() else "serve"


def _healthy() -> bool:
    try:
        health = httpx.get(f"{BASE_URL}/health", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return False
    return health.get("status") == "ok"


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if _healthy():
        pytest.fail("something already serves on 127.0.0.1:8000; stop it before the e2e tests")
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, RAY_ADDRESS="local", RAY_DEDUP_LOGS="0")
    log = open(log_path, "w")
    proc = subprocess.Popen([_serve_binary(), "run", CONFIG], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        while not _healthy():
            if proc.poll() is not None:
                raise RuntimeError(f"`serve run {CONFIG}` exited with {proc.returncode}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"`serve run {CONFIG}` not healthy after {START_TIMEOUT_S}s")
            time.sleep(2)
    except RuntimeError:
        log.flush()
        tail = log_path.read_text()[-6000:]
        _stop(proc)
        pytest.fail(f"stack did not start:\n{tail}")
    print(f"\n[e2e] {CONFIG} healthy after {time.monotonic() - started:.0f}s", file=sys.stderr)
    yield BASE_URL
    _stop(proc)
    log.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # serve run shuts Serve and its local Ray cluster down on Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="session")
def openai_client(stack):
    from openai import OpenAI

    return OpenAI(base_url=f"{stack}/v1", api_key="not-needed", timeout=120, max_retries=0)
