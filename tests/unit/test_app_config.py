"""Split deployment configs: router application args, expert application args, and their composition."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.serve_config import load_serve_config, service_config_from_serve_config
from router_service.config.apps import compose_service_config, parse_expert_app_config, parse_router_app_config
from router_service.config.service import ExpertConfig
from router_service.errors import ConfigError

from .helpers import config_dict

REPO = Path(__file__).resolve().parents[2]


def _router_args(**router):
    args = {k: v for k, v in config_dict(**router).items() if k != "experts"}
    return args


def _experts(*ids):
    return [ExpertConfig.model_validate(e) for e in config_dict()["experts"] if not ids or e["id"] in ids]


def _serve_config(router_args, experts):
    apps = [
        {"name": "coe", "route_prefix": "/", "import_path": "deployments.app:build_router_app", "args": router_args}
    ]
    apps += [
        {
            "name": f"expert-{e['id']}",
            "route_prefix": None,
            "import_path": "deployments.app:build_expert_app",
            "args": e,
        }
        for e in experts
    ]
    return {"applications": apps}


def _message(call, *args):
    with pytest.raises(ConfigError) as info:
        call(*args)
    return info.value.message


def test_router_app_rejects_an_expert_list_naming_the_field():
    assert "experts" in _message(parse_router_app_config, {**_router_args(), "experts": []})


def test_router_app_takes_a_memory_budget_and_names_a_bad_one():
    app = parse_router_app_config({**_router_args(), "residency": {"max_resident_experts": 2}})
    assert app.residency.max_resident_experts == 2
    assert "residency.max_resident_experts" in _message(
        parse_router_app_config, {**_router_args(), "residency": {"max_resident_experts": 0}}
    )


def test_router_app_typo_is_named():
    args = _router_args()
    args["router"]["strategyy"] = "category"
    assert "router.strategyy" in _message(parse_router_app_config, args)


def test_expert_app_bad_field_is_named():
    entry = dict(config_dict()["experts"][0], resources={"num_cpus": "lots"})
    assert "resources.num_cpus" in _message(parse_expert_app_config, entry)


def test_compose_keeps_the_experts_in_discovery_order_with_router_settings():
    app = parse_router_app_config(_router_args(cost_weight=0.3))
    config, unresolved = compose_service_config(app, _experts())
    assert config.expert_ids == ["math", "text", "general"]
    assert config.router.cost_weight == 0.3 and config.router.default_expert == "general"
    assert unresolved == {}


def test_compose_drops_settings_that_name_an_undeployed_expert_and_reports_them():
    args = _router_args(category_map={"algebra": "math", "poems": "poetry"}, skill_annotator={"expert": "general"})
    args["aggregation"] = {"method": "synthesize", "aggregator": "general"}
    config, unresolved = compose_service_config(parse_router_app_config(args), _experts("math", "text"))
    assert unresolved == {
        "router.default_expert": "general",
        "router.category_map.poems": "poetry",
        "router.skill_annotator.expert": "general",
        "aggregation.aggregator": "general",
    }
    assert config.router.default_expert is None
    assert config.router.skill_annotator is None  # the embedding annotator runs until it is deployed
    assert config.router.category_map == {"algebra": "math"}
    assert config.aggregation.method == "vote" and config.aggregation.aggregator is None


def test_compose_strict_names_the_dangling_field():
    app = parse_router_app_config(_router_args())
    message = _message(lambda: compose_service_config(app, _experts("math"), strict=True))
    assert "router.default_expert" in message and "general" in message


def test_compose_without_experts_is_an_error():
    with pytest.raises(ConfigError):
        compose_service_config(parse_router_app_config(_router_args()), [])


def test_serve_config_check_spans_applications():
    experts = config_dict()["experts"]
    config = service_config_from_serve_config(_serve_config(_router_args(), experts))
    assert config.expert_ids == ["math", "text", "general"]

    message = _message(service_config_from_serve_config, _serve_config(_router_args(), experts[:2]))
    assert "applications[0] (coe)" in message and "router.default_expert" in message

    bad = [dict(experts[0], timeout_s=-1)] + experts[1:]
    message = _message(service_config_from_serve_config, _serve_config(_router_args(), bad))
    assert "applications[1] (expert-math)" in message and "timeout_s" in message

    message = _message(service_config_from_serve_config, _serve_config(_router_args(), experts + [experts[0]]))
    assert "duplicate expert id 'math'" in message


def test_shipped_split_configs_have_one_application_per_expert():
    import yaml

    for name in ("coe.yaml", "coe-gpu.yaml"):
        data = yaml.safe_load((REPO / "deployments" / name).read_text())
        builders = [a["import_path"] for a in data["applications"]]
        assert builders.count("deployments.app:build_router_app") == 1, name
        config = load_serve_config(REPO / "deployments" / name)
        assert builders.count("deployments.app:build_expert_app") == len(config.experts), name


def test_router_app_build_fails_on_a_missing_artifact_naming_the_field(tmp_path):
    from deployments.app import prepare_router_app

    args = _router_args(strategy="category", artifact=str(tmp_path / "missing.joblib"))
    assert "router.artifact" in _message(prepare_router_app, args)


def test_check_command_names_the_field_and_fails(tmp_path, capsys):
    import yaml

    from deployments.serve_config import main

    experts = config_dict()["experts"]
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(_serve_config(_router_args(), experts)))
    bad.write_text(yaml.safe_dump(_serve_config(_router_args(), experts[:2])))
    assert main([str(good)]) == 0
    assert main([str(bad)]) == 1
    assert "router.default_expert" in capsys.readouterr().out


def test_one_list_of_the_settings_that_name_experts():
    """`expert_references` is the one list: the one-application check and the split deployment's dangling
    check both read it, so a field that names an expert is checked (or dropped) the same way in both."""
    from router_service.config.apps import dangling_references
    from router_service.config.service import expert_references, parse_service_config

    ghost = {
        "default_expert": "ghost",
        "category_map": {"c": "ghost"},
        "rules": [{"expert": "ghost", "keywords": ["x"]}],
        "skill_annotator": {"expert": "ghost"},
    }
    args = _router_args(**ghost)
    args["aggregation"] = {"method": "synthesize", "aggregator": "ghost"}
    app = parse_router_app_config(args)
    fields = {
        "router.default_expert",
        "router.category_map.c",
        "router.rules[0].expert",
        "router.skill_annotator.expert",
        "aggregation.aggregator",
    }
    assert set(expert_references(app.router, app.aggregation)) == fields
    assert set(dangling_references(app, ["math", "text", "general"])) == fields
    for key, value in [*ghost.items(), ("aggregator", "ghost")]:
        one = config_dict(**({} if key == "aggregator" else {key: value}))
        if key == "aggregator":
            one["aggregation"] = {"aggregator": value}
        field = next(f for f in fields if f.split(".")[1].startswith(key))
        message = _message(parse_service_config, one)
        assert field in message and "'ghost' is not a configured expert" in message


class Recorder:
    """Stands in for a Serve deployment: records what `bind_expert` passes to `.options()`."""

    seen: dict

    def options(self, **options):
        self.seen = options
        return self

    def bind(self, *args, **kwargs):
        return self


def test_custom_resources_reach_the_expert_replica_ray_actor_options():
    """`resources.custom` pins an expert to the nodes started with `ray start --resources` (README, "GPU and
    cluster deployment"): Serve gets it as the replica's `ray_actor_options["resources"]`."""
    from deployments.app import bind_expert

    entry = config_dict()["experts"][0]
    pinned, plain = Recorder(), Recorder()
    bind_expert(parse_expert_app_config({**entry, "resources": {"num_cpus": 0.5, "custom": {"node_b": 1}}}), pinned)
    bind_expert(parse_expert_app_config(entry), plain)
    assert pinned.seen["ray_actor_options"]["resources"] == {"node_b": 1.0}
    assert pinned.seen["ray_actor_options"]["num_cpus"] == 0.5
    assert "resources" not in plain.seen["ray_actor_options"]
    message = _message(parse_expert_app_config, {**entry, "resources": {"custom": {"node_b": -1}}})
    assert "resources.custom" in message and "node_b" in message


def test_an_expert_autoscaling_config_is_checked_by_serve_and_unknown_keys_are_named():
    from deployments.app import validate_autoscaling

    validate_autoscaling("experts[1].", {"min_replicas": 0, "max_replicas": 2, "initial_replicas": 0})
    with pytest.raises(ConfigError, match=r"experts\[1\].autoscaling_config.min_replica: not a Serve"):
        validate_autoscaling("experts[1].", {"min_replica": 0})
    with pytest.raises(ConfigError, match=r"experts\[1\].autoscaling_config: max_replicas \(1\) must be"):
        validate_autoscaling("experts[1].", {"min_replicas": 2, "max_replicas": 1})


def test_a_cpu_expert_replica_runs_the_vllm_worker_in_the_engine_core_process_unless_its_env_says_otherwise():
    """`deployments/app.py` gives CPU replicas VLLM_ENABLE_V1_MULTIPROCESSING=0 (one process fewer per engine,
    README "Engines start eager"); a GPU replica keeps vLLM's defaults, and an expert's `env` wins."""
    from deployments.app import bind_expert

    entry = config_dict()["experts"][0]
    cpu, gpu, overridden = Recorder(), Recorder(), Recorder()
    bind_expert(parse_expert_app_config(entry), cpu)
    bind_expert(parse_expert_app_config({**entry, "resources": {"num_gpus": 1}}), gpu)
    bind_expert(parse_expert_app_config({**entry, "env": {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}}), overridden)

    def env(recorder: Recorder) -> dict:
        return recorder.seen["ray_actor_options"]["runtime_env"]["env_vars"]

    assert env(cpu)["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env(cpu)["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env(gpu)
    assert env(overridden)["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
