"""Small builders shared by the unit tests (no Ray, no vLLM)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from router_service.api.app import create_app
from router_service.config.service import parse_service_config
from router_service.experts.fake import FakeExpertBackend
from router_service.routing.embedding import HashingEmbedder
from router_service.serving.assembly import build_service

REPO = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("torch", "transformers", "vllm", "ray")


def heavy_imports_of(statements: str, heavy: tuple[str, ...] = HEAVY_MODULES) -> list[str]:
    """Which of `heavy` a fresh interpreter at the repo root has imported after running `statements`
    (fresh, so modules other tests imported cannot hide an import)."""
    code = f"import sys\n{statements}\nprint(*sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


def config_dict(**router: Any) -> dict[str, Any]:
    return {
        "experts": [
            {
                "id": "math",
                "model": "org/math-7b",
                "skills": ["math", "sum"],
                "cost": {"input_per_mtok": 0.1, "output_per_mtok": 0.1},
                "timeout_s": 2,
            },
            {
                "id": "text",
                "model": "org/text-7b",
                "skills": ["reverse", "word"],
                "cost": {"input_per_mtok": 0.1, "output_per_mtok": 0.1},
                "timeout_s": 2,
            },
            {
                "id": "general",
                "model": "org/general-8b",
                "generalist": True,
                "cost": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
                "timeout_s": 2,
            },
        ],
        "router": {"strategy": "keyword", "default_expert": "general", **router},
        "server": {"max_body_bytes": 4096, "max_prompt_chars": 500, "max_tokens_limit": 64, "default_max_tokens": 16},
    }


def make_service(fakes: dict[str, dict[str, Any]] | None = None, **router: Any):
    config = parse_service_config(config_dict(**router))
    backends = {e.id: FakeExpertBackend(e.id, **(fakes or {}).get(e.id, {})) for e in config.experts}
    service = build_service(config, backends, embedder_factory=lambda name: HashingEmbedder())
    return service, backends


def make_client(service) -> httpx.AsyncClient:
    app = create_app(lambda: service, service.config.server)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def assert_openai_error(response: httpx.Response, status: int, param: str | None = "__any__") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if param != "__any__":
        assert error["param"] == param, error
    return error
