"""A fitted router artifact on real Ray Serve: two clearly different prompts reach two different experts."""

import httpx
import pytest

from tests.serve.conftest import deploy
from tests.unit.helpers import config_dict
from tests.unit.routing_fixtures import fitted_artifact

pytestmark = pytest.mark.serve


def test_fitted_category_router_over_http(ray_serve, tmp_path_factory):
    artifact = fitted_artifact(tmp_path_factory.mktemp("art") / "category.joblib")
    base = deploy(
        ray_serve, config_dict(strategy="category", artifact=str(artifact)), {}, name="fitted", route_prefix="/fitted"
    )

    def ask(prompt):
        r = httpx.post(
            f"{base}/v1/chat/completions",
            timeout=60,
            json={"model": "coe", "messages": [{"role": "user", "content": prompt}]},
        )
        assert r.status_code == 200, r.text
        return r

    math = ask("what is 21 plus 9 sum the numbers")
    words = ask("reverse the word lantern and spell it backwards")
    assert math.headers["x-coe-experts"] == "math"
    assert words.headers["x-coe-experts"] == "text"
    routing = math.json()["routing"]
    assert routing["strategy"] == "category"
    assert routing["details"]["category"] == "math" and routing["details"]["mapped_expert"] == "math"
    assert set(routing["scores"]) == {"math", "text", "general"}
