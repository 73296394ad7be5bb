"""The service with a fitted artifact: routing, explanation, and artifacts fitted on other experts."""

import logging

import pytest

from router_service.config.service import parse_service_config
from router_service.errors import ConfigError
from router_service.experts.fake import FakeExpertBackend
from router_service.routing.embedding import make_embedder
from router_service.serving.assembly import build_service

from .helpers import config_dict, make_client
from .routing_fixtures import fitted_artifact

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def service_with(artifact, experts=("math", "text", "general"), **router):
    args = config_dict(**{"strategy": "category", **router, "artifact": str(artifact)})
    args["experts"] = [e for e in args["experts"] if e["id"] in experts]
    if "general" not in experts:
        args["router"]["default_expert"] = None
    config = parse_service_config(args)
    backends = {e.id: FakeExpertBackend(e.id) for e in config.experts}
    return build_service(config, backends, embedder_factory=make_embedder)


def ask(content, **kw):
    return {"model": "coe", "messages": [{"role": "user", "content": content}], **kw}


async def test_category_artifact_routes_and_explains(tmp_path):
    service = service_with(fitted_artifact(tmp_path / "c.joblib"))
    async with make_client(service) as c:
        assert "unrouted" not in (await c.get("/health")).json()  # fitted on every deployed expert
        math = (await c.post("/v1/chat/completions", json=ask("what is 12 plus 30 sum the numbers"))).json()
        word = (await c.post("/v1/chat/completions", json=ask("reverse the word tomato and spell it backwards"))).json()
    assert math["routing"]["experts"] == ["math"] and word["routing"]["experts"] == ["text"]
    assert math["routing"]["details"]["category"] == "math"
    assert 0.5 <= math["routing"]["details"]["confidence"] <= 1.0
    assert word["routing"]["details"]["category"] == "words"


async def test_removed_expert_goes_to_next_best_and_response_says_so(tmp_path):
    service = service_with(fitted_artifact(tmp_path / "c.joblib"), experts=("text", "general"))
    async with make_client(service) as c:
        body = (await c.post("/v1/chat/completions", json=ask("what is 12 plus 30 sum the numbers"))).json()
    assert body["routing"]["experts"][0] in ("text", "general")
    assert body["routing"]["fallback"][0]["wanted"] == "math"
    assert "not configured" in body["routing"]["fallback"][0]["reason"]


async def test_added_expert_is_never_routed_to_and_warned_about(tmp_path, caplog):
    artifact = fitted_artifact(tmp_path / "c.joblib", models=["math", "text"])
    with caplog.at_level(logging.WARNING):
        service = service_with(artifact)
    assert "general" in caplog.text and "not routed to until the artifact is refitted" in caplog.text
    async with make_client(service) as c:
        health = (await c.get("/health")).json()
        assert health["unrouted"] == {"category": ["general"]}  # said where an operator looks, too
        for prompt in ("what is 1 plus 2 sum the numbers", "reverse the word cat", "hello there", "x y z"):
            body = (await c.post("/v1/chat/completions", json=ask(prompt))).json()
            assert "general" not in body["routing"]["chosen"]


def test_artifact_strategy_must_match_config(tmp_path):
    artifact = fitted_artifact(tmp_path / "s.joblib", strategy="skill")
    with pytest.raises(ConfigError, match="router.strategy"):
        service_with(artifact)


def test_missing_artifact_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="router.artifact"):
        service_with(tmp_path / "nope.joblib")


def test_learned_strategy_without_artifact_is_a_config_error():
    args = config_dict(strategy="cost_aware")
    with pytest.raises(ConfigError, match="router.artifact"):
        build_service(parse_service_config(args), {e: FakeExpertBackend(e) for e in ("math", "text", "general")})


# -- bug 1: config defaults must not overwrite what an artifact was fitted with -------------------
def _fit_with_cli(tmp_path, strategy, *params):
    """An artifact made the documented way: `python -m router_service.cli.fit ... --param k=v`."""
    import json

    from router_service.cli.fit import main

    from .routing_fixtures import separable_table

    table = separable_table()
    train = tmp_path / f"{strategy}-train.json"
    train.write_text(
        json.dumps(
            [
                {"question": p, "scores": dict(zip(table.models, map(float, s))), "category": c}
                for p, s, c in zip(table.prompts, table.scores, table.categories)
            ]
        )
    )
    out = tmp_path / f"{strategy}.joblib"
    args = ["--strategy", strategy, "--train", str(train), "--embedder", "hashing-256", "--out", str(out)]
    for param in params:
        args += ["--param", param]
    assert main(args) == 0
    return out


def _router_args(cost_aware, category, **router):
    extra = [str(category)] if category is not None else []
    return config_dict(strategy="cost_aware", artifact=str(cost_aware), extra_artifacts=extra, **router)


def _strategies(cost_aware, category, **router):
    from router_service.serving.assembly import build_strategies

    args = _router_args(cost_aware, category, **router)
    strategies = build_strategies(parse_service_config(args), embedder_factory=make_embedder)
    return strategies["cost_aware"], strategies.get("category")


def _composed_strategies(cost_aware, category, **router):
    """The same through the split deployment: router application args composed with the expert applications."""
    from router_service.config.apps import compose_service_config, parse_router_app_config
    from router_service.config.service import ExpertConfig, RouterConfig
    from router_service.serving.assembly import build_strategies

    args = _router_args(cost_aware, category, **router)
    experts = [ExpertConfig.model_validate(e) for e in args.pop("experts")]
    # The router settings travel to the replica as user_config (deployments.app.bind_router dumps them).
    app = parse_router_app_config(args)
    shipped = RouterConfig.model_validate(app.router.model_dump(mode="json", exclude_unset=True))
    config, _ = compose_service_config(app.model_copy(update={"router": shipped}), experts)
    strategies = build_strategies(config, embedder_factory=make_embedder)
    return strategies["cost_aware"], strategies.get("category")


@pytest.mark.parametrize("build", [_strategies, _composed_strategies], ids=["one-app", "split"])
def test_bug1_fitted_values_survive_config_defaults(tmp_path, build):
    cost_aware = _fit_with_cli(tmp_path, "cost_aware", "cost_weight=0.2")
    category = _fit_with_cli(tmp_path, "category", "confidence_threshold=0.3")

    # A config that does not write them: the fitted values stay (the defaults 0.0 and 0.5 do not win).
    ca, cat = build(cost_aware, category)
    assert ca.get_params()["cost_weight"] == 0.2
    assert cat.get_params()["confidence_threshold"] == 0.3
    assert cat.get_params()["default_expert"] == "general"  # written by config_dict: it is applied

    # A config that writes them: the config wins, whatever the artifact holds.
    ca, cat = build(cost_aware, category, cost_weight=0.7, confidence_threshold=0.9)
    assert ca.get_params()["cost_weight"] == 0.7
    assert cat.get_params()["confidence_threshold"] == 0.9

    # Written equal to the default still counts as written: the user asked for 0.
    ca, _ = build(cost_aware, category, cost_weight=0.0)
    assert ca.get_params()["cost_weight"] == 0.0

    # router.params go through the same door and win over the named settings.
    ca, _ = build(cost_aware, None, cost_weight=0.7, params={"cost_weight": 0.4})
    assert ca.get_params()["cost_weight"] == 0.4


def test_unknown_router_param_names_the_field(tmp_path):
    cost_aware = _fit_with_cli(tmp_path, "cost_aware")
    category = _fit_with_cli(tmp_path, "category")
    with pytest.raises(ConfigError, match=r"router.params.colour: strategy 'cost_aware' has no parameter 'colour'"):
        _strategies(cost_aware, None, params={"colour": "red"})
    # A router.params key applies to every artifact: one the extra artifact's strategy lacks is named too.
    with pytest.raises(ConfigError, match=r"router.params.cost_weight: strategy 'category' has no parameter"):
        _strategies(cost_aware, category, params={"cost_weight": 0.4})


async def test_bug1_served_default_lambda_is_the_fitted_cost_weight(tmp_path):
    """End to end: a request without routing.cost_weight is routed at the artifact's fitted λ."""
    cost_aware = _fit_with_cli(tmp_path, "cost_aware", "cost_weight=0.2")
    args = config_dict(strategy="cost_aware", artifact=str(cost_aware))
    config = parse_service_config(args)
    service = build_service(
        config, {e.id: FakeExpertBackend(e.id) for e in config.experts}, embedder_factory=make_embedder
    )
    async with make_client(service) as c:
        default = (await c.post("/v1/chat/completions", json=ask("what is 1 plus 2 sum the numbers"))).json()
        asked = (
            await c.post(
                "/v1/chat/completions", json=ask("what is 1 plus 2 sum the numbers", routing={"cost_weight": 0.9})
            )
        ).json()
    assert default["routing"]["details"]["lambda"] == 0.2
    assert asked["routing"]["details"]["lambda"] == 0.9


@pytest.mark.parametrize("strategy", ["stack", "mf"])
async def test_stack_and_mf_artifacts_are_served_through_the_api(tmp_path, strategy):
    """A saved stack holds fitted base strategies; loading it must give every base the router's embedder
    and route over HTTP like the strategy it was fitted as."""
    artifact = fitted_artifact(tmp_path / f"{strategy}.joblib", strategy=strategy)
    service = service_with(artifact, strategy=strategy)
    async with make_client(service) as c:
        math = (await c.post("/v1/chat/completions", json=ask("what is 12 plus 30 sum the numbers"))).json()
        word = (await c.post("/v1/chat/completions", json=ask("reverse the word tomato and spell it backwards"))).json()
    assert math["routing"]["experts"] == ["math"] and word["routing"]["experts"] == ["text"]
    assert math["routing"]["strategy"] == strategy
    assert set(math["routing"]["details"]["quality"]) == {"math", "text", "general"}
