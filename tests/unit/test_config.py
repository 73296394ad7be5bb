from pathlib import Path

import pytest

from deployments.serve_config import load_serve_config
from router_service.config.service import parse_service_config
from router_service.errors import ConfigError

from .helpers import config_dict

REPO = Path(__file__).resolve().parents[2]


def test_valid_config_parses():
    config = parse_service_config(config_dict())
    assert config.expert_ids == ["math", "text", "general"]


def _fails_naming(args, *fragments):
    with pytest.raises(ConfigError) as info:
        parse_service_config(args)
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value.message


def test_unknown_key_is_named():
    args = config_dict()
    args["experts"][1]["enigne"] = {}
    _fails_naming(args, "experts[1].enigne", "Extra inputs")


def test_unknown_top_level_key_is_named():
    args = config_dict()
    args["routr"] = {}
    _fails_naming(args, "routr")


def test_duplicate_expert_id_is_named():
    args = config_dict()
    args["experts"][2]["id"] = "math"
    _fails_naming(args, "experts[2].id", "duplicate expert id 'math'")


def test_missing_local_path_is_named(tmp_path):
    args = config_dict()
    args["experts"][0]["model"] = str(tmp_path / "nope")
    _fails_naming(args, "experts[0]", "does not exist")


def test_missing_local_path_with_build_recipe_is_allowed(tmp_path):
    args = config_dict()
    args["experts"][0]["model"] = str(tmp_path / "later")
    args["experts"][0]["build"] = "tiny-random:1"
    parse_service_config(args)


def test_strategy_naming_unknown_expert_is_named():
    _fails_naming(config_dict(default_expert="ghost"), "router.default_expert", "'ghost'")
    _fails_naming(config_dict(category_map={"math": "ghost"}), "router.category_map.math", "'ghost'")
    _fails_naming(config_dict(rules=[{"expert": "ghost", "keywords": ["x"]}]), "router.rules[0].expert")


def test_unknown_strategy_is_named():
    _fails_naming(config_dict(strategy="magic"), "router.strategy", "unknown strategy 'magic'")


def test_reserved_expert_id():
    args = config_dict()
    args["experts"][0]["id"] = "coe"
    _fails_naming(args, "experts[0].id", "reserved")


def test_wrong_type_is_named():
    args = config_dict()
    args["experts"][0]["resources"] = {"num_cpus": "lots"}
    _fails_naming(args, "experts[0].resources.num_cpus")


def test_shipped_gpu_config_validates():
    config = load_serve_config(REPO / "deployments" / "coe-gpu.yaml")
    assert len(config.experts) >= 3
    assert all(e.resources.num_gpus > 0 for e in config.experts)


def test_default_costs_are_proportional_to_parameter_count():
    """Every expert of coe.yaml, the converted generalist included, is priced by its size."""
    from zoo.build import ZOO_EXPERTS
    from zoo.gguf import GGUF_MODELS

    config = load_serve_config(REPO / "deployments" / "coe.yaml")
    for expert in config.experts:
        kind, name = expert.build.split(":", 1)
        spec = ZOO_EXPERTS[name] if kind == "zoo" else GGUF_MODELS[name]
        assert expert.cost.input_per_mtok == expert.cost.output_per_mtok == spec.cost_per_mtok
        assert expert.generalist == (kind == "gguf")
    general = config.expert("general")
    assert all(general.cost.input_per_mtok > e.cost.input_per_mtok for e in config.experts if e.id != "general")


def test_default_router_is_fitted_for_exactly_the_served_experts_at_their_prices():
    import yaml

    from router_service.config.apps import parse_router_app_config

    apps = {a["name"]: a for a in yaml.safe_load((REPO / "deployments" / "coe.yaml").read_text())["applications"]}
    router = parse_router_app_config(apps["coe"]["args"])
    config = load_serve_config(REPO / "deployments" / "coe.yaml")
    assert router.fit is not None and set(router.fit.experts) == set(config.expert_ids)
    for expert in config.experts:
        source = router.fit.experts[expert.id]
        assert (source.model, source.build, source.cost) == (expert.model, expert.build, expert.cost)
    fitted = {Path(p).stem for p in [router.router.artifact, *router.router.extra_artifacts]}
    assert fitted == set(router.fit.strategies)
    assert all(
        Path(p).parent == Path(router.fit.out_dir) for p in [router.router.artifact, *router.router.extra_artifacts]
    )


def test_shipped_cpu_configs_validate():
    for name in ("coe.yaml", "coe-tiny.yaml", "coe-residency.yaml", "coe-residency-synthesize.yaml"):
        config = load_serve_config(REPO / "deployments" / name)
        assert all(e.resources.num_gpus == 0 for e in config.experts)


def test_fit_section_must_match_the_expert_applications():
    """A router fitted for a model or price the expert application does not serve fails the config check."""
    import yaml

    from deployments.serve_config import service_config_from_serve_config

    data = yaml.safe_load((REPO / "deployments" / "coe.yaml").read_text())
    router_args = next(a for a in data["applications"] if a["name"] == "coe")["args"]
    router_args["fit"]["experts"]["math"]["cost"]["input_per_mtok"] = 9.0
    with pytest.raises(ConfigError, match=r"fit\.experts\.math\.cost: .* differs from the expert application's cost"):
        service_config_from_serve_config(data, "coe.yaml")
    router_args["fit"]["experts"]["math"]["cost"]["input_per_mtok"] = 0.3411
    router_args["fit"]["experts"]["nobody"] = {"model": "./x"}
    with pytest.raises(ConfigError, match=r"fit\.experts\.nobody: no expert application"):
        service_config_from_serve_config(data, "coe.yaml")


def test_config_errors_and_request_errors_format_field_paths_alike():
    """One location formatter (`errors.format_loc`) names fields in config errors and in API 400s."""
    from pydantic import BaseModel, ValidationError

    from router_service.config.service import format_validation_error
    from router_service.errors import format_loc, validation_error_to_coe

    assert format_loc(("experts", 0, "cost", "input_per_mtok")) == "experts[0].cost.input_per_mtok"
    assert format_loc((0, "x")) == "[0].x" and format_loc(()) == ""

    class Item(BaseModel):
        content: str

    class Body(BaseModel):
        messages: list[Item]

    with pytest.raises(ValidationError) as info:
        Body.model_validate({"messages": [{"content": 3}]})
    assert "  messages[0].content: " in format_validation_error(info.value)
    assert validation_error_to_coe(info.value).param == "messages[0].content"
