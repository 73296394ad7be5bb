"""Starts the real stack with the user's own command: `serve run deployments/coe.yaml`.

Ray Serve + router + vLLM CPU experts, reached over HTTP. One start per test session (about
2-4 minutes on 2 cores; the first run on a fresh machine also trains the expert zoo).
"""

from __future__ import annotations

import contextlib
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


def _healthy(experts: set[str] = frozenset()) -> bool:
    """The router is up and serves (at least) `experts`, all healthy; in the split deployment the router
    comes up first and finds each expert application as its engine starts."""
    try:
        health = httpx.get(f"{BASE_URL}/health", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return False
    return health.get("status") == "ok" and experts <= set(health.get("experts", {}))


@contextlib.contextmanager
def running_stack(config: str, log_dir: Path):
    """`serve run CONFIG` in a fresh local Ray cluster until every expert is healthy; stopped on exit."""
    if not _port_free_within(90):  # the previous module's stack may still be shutting down
        pytest.fail("something already serves on 127.0.0.1:8000; stop it before the e2e tests")
    from deployments.serve_config import load_serve_config

    experts = set(load_serve_config(REPO / config).expert_ids)
    log_path = log_dir / "serve.log"
    env = dict(os.environ, RAY_ADDRESS="local", RAY_DEDUP_LOGS="0")
    log = open(log_path, "w")  # noqa: SIM115  # closed in the finally below, after the server stops
    proc = subprocess.Popen(
        [_serve_binary(), "run", config],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.monotonic()
    try:
        while not _healthy(experts):
            if proc.poll() is not None:
                raise RuntimeError(f"`serve run {config}` exited with {proc.returncode}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"`serve run {config}` not healthy after {START_TIMEOUT_S}s")
            time.sleep(2)
    except RuntimeError:
        log.flush()
        tail = log_path.read_text()[-6000:]
        _stop(proc)
        pytest.fail(f"stack did not start:\n{tail}")
    print(f"\n[e2e] {config} healthy after {time.monotonic() - started:.0f}s", file=sys.stderr)
    try:
        yield BASE_URL
    finally:
        _stop(proc)
        log.close()


class Stacks:
    """One stack at a time on port 8000, kept up across modules that ask for the same config (the modules
    run in file order: test_1*, default stack; test_2*, residency stack)."""

    def __init__(self, tmp_path_factory) -> None:
        self._tmp = tmp_path_factory
        self._config: str | None = None
        self._exit = contextlib.ExitStack()
        self.url = BASE_URL

    def ensure(self, config: str) -> str:
        if config != self._config:
            self.close()
            self._exit.enter_context(running_stack(config, self._tmp.mktemp("serve")))
            self._config = config
        return self.url

    def close(self) -> None:
        self._exit.close()
        self._exit = contextlib.ExitStack()
        self._config = None


@pytest.fixture(scope="session")
def stacks(tmp_path_factory):
    manager = Stacks(tmp_path_factory)
    yield manager
    manager.close()


@pytest.fixture(scope="module")
def stack(stacks):
    """The default deployment, started once for every module that uses it."""
    return stacks.ensure(CONFIG)


def _port_free_within(timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{BASE_URL}/health", timeout=2)
        except httpx.HTTPError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # serve run shuts Serve and its local Ray cluster down on Ctrl-C
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    # The cluster's processes may outlive `serve run` for a moment; the next stack needs the port.
    if not _port_free_within(120):
        # Still serving: the local cluster this fixture started was orphaned. Stop it.
        subprocess.run(
            [str(Path(sys.executable).with_name("ray")), "stop", "--force"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _port_free_within(60)


@pytest.fixture(scope="module")
def openai_client(stack):
    from openai import OpenAI

    return OpenAI(base_url=f"{stack}/v1", api_key="not-needed", timeout=120, max_retries=0)
