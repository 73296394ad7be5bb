"""`serve run deployments/coe.yaml` entry point: validate args, make model files, bind the deployments."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from router_service.config import ServiceConfig, parse_service_config
from router_service.errors import ConfigError

log = logging.getLogger("coe.app")


def _resolve_path(path: str, base_dir: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def prepare_config(args: dict[str, Any] | ServiceConfig, base_dir: Path | None = None,
                   check_engine_args: bool = True) -> ServiceConfig:
    """Validate, make missing model files, and turn relative paths absolute (replicas may run elsewhere)."""
    from router_service.experts.vllm_engine import validate_engine_args
    from router_service.models import ensure_model

    config = parse_service_config(args)
    base_dir = base_dir or Path(os.environ.get("COE_BASE_DIR", os.getcwd()))
    data = config.model_dump()
    for index, expert in enumerate(config.experts):
        if check_engine_args:
            validate_engine_args(index, expert.engine)
        model = expert.resolved_model(base_dir)
        if expert.build:
            try:
                ensure_model(model, expert.build)
            except ConfigError as exc:
                raise ConfigError(f"experts[{index}].build: {exc.message}") from None
        data["experts"][index]["model"] = model
    router = data["router"]
    if router["artifact"]:
        router["artifact"] = _resolve_path(router["artifact"], base_dir)
    router["extra_artifacts"] = [_resolve_path(p, base_dir) for p in router["extra_artifacts"]]
    return ServiceConfig.model_validate(data)


def deployment_name(expert_id: str) -> str:
    return "expert-" + re.sub(r"[^A-Za-z0-9._-]", "_", expert_id)


def _expert_actor_options(expert) -> dict[str, Any]:
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"} if expert.resources.num_gpus == 0 else {}
    env.update(expert.env)
    options: dict[str, Any] = {"num_cpus": expert.resources.num_cpus, "num_gpus": expert.resources.num_gpus,
                               "runtime_env": {"env_vars": env}}
    if expert.resources.memory_gb:
        options["memory"] = int(expert.resources.memory_gb * 1024**3)
    return options


def build_application(config: ServiceConfig, expert_deployment=None,
                      expert_extra_args: dict[str, dict[str, Any]] | None = None):
    """Bind one deployment per expert and the router ingress holding a handle to each."""
    from deployments.router import RouterDeployment

    if expert_deployment is None:
        from deployments.expert import ExpertDeployment as expert_deployment
    # Fail here, in the driver, on a bad artifact rather than in a replica that Serve keeps restarting.
    from router_service.assembly import build_strategies

    build_strategies(config, embedder_factory=_lazy_embedder)
    handles = {}
    budget = config.residency.max_resident_experts
    for index, expert in enumerate(config.experts):
        # Matches ResidencyManager's initial state: the first `budget` experts in config order start loaded.
        start_loaded = budget is None or index < budget
        extra = (expert_extra_args or {}).get(expert.id, {})
        handles[expert.id] = expert_deployment.options(
            name=deployment_name(expert.id),
            num_replicas=expert.num_replicas,
            max_ongoing_requests=expert.max_ongoing_requests,
            ray_actor_options=_expert_actor_options(expert),
        ).bind(expert.id, expert.model, dict(expert.engine), start_loaded, **extra)
    rd = config.router_deployment
    # Router settings travel as user_config, not as init args: changing them reconfigures in place.
    init_config = config.model_dump(mode="json", exclude={"router"})
    return RouterDeployment.options(
        name="router", num_replicas=rd.num_replicas, max_ongoing_requests=rd.max_ongoing_requests,
        ray_actor_options={"num_cpus": rd.num_cpus},
        user_config={"router": config.router.model_dump(mode="json")},
    ).bind(init_config, handles)


def _lazy_embedder(name: str):
    from router_service.embedding import make_embedder

    return make_embedder(name)  # loads nothing until the first encode


def build_app(args: dict[str, Any]):
    """Ray Serve application builder named by `import_path: deployments.app:build_app`."""
    logging.basicConfig(level=logging.INFO)
    config = prepare_config(args)
    log.info("CoE app: experts %s, strategy %s", config.expert_ids, config.router.strategy)
    return build_application(config)
