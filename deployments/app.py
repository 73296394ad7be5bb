"""`serve run deployments/coe.yaml` entry point: validate args, make model files, bind the deployments."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from deployments.engine_args import CPU_ENGINE_ENV, validate_engine_args
from deployments.model_files import ensure_model, ensure_quality_record
from router_service.config.apps import RouterAppConfig, parse_expert_app_config, parse_router_app_config
from router_service.config.gateway import GatewayConfig
from router_service.config.service import (
    ExpertConfig,
    ResidencyConfig,
    RouterConfig,
    RouterFitConfig,
    ServerConfig,
    ServiceConfig,
    parse_service_config,
)
from router_service.errors import ConfigError

log = logging.getLogger("coe.app")


def _resolve_path(path: str, base_dir: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def prepare_expert(expert: ExpertConfig, prefix: str, base_dir: Path, check_engine_args: bool = True) -> ExpertConfig:
    """Check engine args, make missing model files, and make a local model path absolute."""
    if check_engine_args:
        validate_engine_args(prefix, expert.engine)
    if expert.autoscaling_config is not None:
        validate_autoscaling(prefix, expert.autoscaling_config)
    model = expert.resolved_model(base_dir)
    if expert.build:
        try:
            ensure_model(model, expert.build)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}build: {exc.message}") from None
    return expert.model_copy(update={"model": model})


def validate_autoscaling(prefix: str, autoscaling: dict[str, Any]) -> None:
    """Serve's own model checks the values; it ignores unknown keys, so those are refused here."""
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig

    unknown = sorted(set(autoscaling) - set(AutoscalingConfig.model_fields))
    if unknown:
        raise ConfigError(f"{prefix}autoscaling_config.{unknown[0]}: not a Serve autoscaling setting")
    try:
        AutoscalingConfig.model_validate(autoscaling)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(
            f"{prefix}autoscaling_config{'.' + where if where else ''}: {first['msg'].removeprefix('Value error, ')}"
        ) from None


def _base_dir(base_dir: Path | None) -> Path:
    return base_dir or Path(os.environ.get("COE_BASE_DIR", os.getcwd()))


DEFAULT_EMBEDDER_EXPORT = "./models/embedders/all-MiniLM-L6-v2-onnx"


def _resolve_router_paths(router: RouterConfig, base_dir: Path) -> RouterConfig:
    update: dict[str, Any] = {
        "artifact": _resolve_path(router.artifact, base_dir) if router.artifact else None,
        "extra_artifacts": [_resolve_path(p, base_dir) for p in router.extra_artifacts],
    }
    if router.embedder_backend != "torch":
        update["embedder_path"] = ensure_embedder_export(
            _resolve_path(router.embedder_path or DEFAULT_EMBEDDER_EXPORT, base_dir)
        )
    return router.model_copy(update=update)


def prepare_gateway(gateway: GatewayConfig, server: ServerConfig, base_dir: Path) -> GatewayConfig:
    """An absolute counter-store path (replicas may run elsewhere), checked here so a bad store or a
    key whose environment variable is unset fails at start-up, named."""
    from router_service.api.app import api_keys
    from router_service.gateway.limits import KeyRing, Limiter

    store = gateway.store
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).is_absolute():
        store = "sqlite:///" + _resolve_path(store.removeprefix("sqlite:///"), base_dir)
    gateway = gateway.model_copy(update={"store": store})
    KeyRing.from_config(gateway, api_keys(server))
    if any(k.limited for k in gateway.keys) or gateway.default_limits.limited:
        Limiter.from_config(gateway).close()
    return gateway


def ensure_embedder_export(path: str) -> str:
    """Export the packaged MiniLM to ONNX at `path` unless a current export is there (first start only;
    single-flight across processes; the export fails loudly below its agreement gate)."""
    from zoo.embedder_export import export

    try:
        export(Path(path))
    except Exception as exc:
        raise ConfigError(f"router.embedder_path: could not export the embedder to {path}: {exc}") from exc
    return path


def prepare_config(
    args: dict[str, Any] | ServiceConfig, base_dir: Path | None = None, check_engine_args: bool = True
) -> ServiceConfig:
    """Validate, make missing model files, and turn relative paths absolute (replicas may run elsewhere)."""
    config = parse_service_config(args)
    base_dir = _base_dir(base_dir)
    experts = [prepare_expert(e, f"experts[{i}].", base_dir, check_engine_args) for i, e in enumerate(config.experts)]
    router = _resolve_router_paths(config.router, base_dir)
    gateway = prepare_gateway(config.gateway, config.server, base_dir)
    if config.fit is not None:
        fit_routers_on_built_experts(config.fit, router, base_dir, experts)
    return config.model_copy(update={"experts": experts, "router": router, "gateway": gateway})


def deployment_name(expert_id: str) -> str:
    return "expert-" + re.sub(r"[^A-Za-z0-9._-]", "_", expert_id)


def _expert_actor_options(expert) -> dict[str, Any]:
    env = dict(CPU_ENGINE_ENV) if expert.resources.num_gpus == 0 else {}
    env.update(expert.env)
    options: dict[str, Any] = {
        "num_cpus": expert.resources.num_cpus,
        "num_gpus": expert.resources.num_gpus,
        "runtime_env": {"env_vars": env},
    }
    if expert.resources.memory_gb:
        options["memory"] = int(expert.resources.memory_gb * 1024**3)
    if expert.resources.custom:
        options["resources"] = dict(expert.resources.custom)
    return options


def bind_expert(expert: ExpertConfig, expert_deployment, start_loaded: bool = True, **extra: Any):
    # Serve sizes an autoscaled expert itself (from min_replicas, down to zero when allowed).
    sizing: dict[str, Any] = (
        {"autoscaling_config": expert.autoscaling_config}
        if expert.autoscaling_config is not None
        else {"num_replicas": expert.num_replicas}
    )
    return expert_deployment.options(
        name=deployment_name(expert.id),
        **sizing,
        max_ongoing_requests=expert.max_ongoing_requests,
        max_queued_requests=expert.max_queued_requests,
        ray_actor_options=_expert_actor_options(expert),
    ).bind(expert.id, expert.model, dict(expert.engine), start_loaded, describe=describe_expert(expert), **extra)


def describe_expert(expert: ExpertConfig) -> dict[str, Any]:
    """The `experts[]` entry the router reads back (discovery). Without `num_replicas` when autoscaled:
    the entry must validate again, and the two ways to size an expert exclude each other."""
    exclude = {"num_replicas"} if expert.autoscaling_config is not None else set()
    return expert.model_dump(mode="json", exclude=exclude)


def bind_router(
    init_config: dict[str, Any],
    router: RouterConfig,
    rd,
    handles: dict[str, Any],
    discovery: dict[str, Any] | None = None,
    residency=None,
):
    from deployments.router import RouterDeployment

    # Router settings travel as user_config, not as init args: changing them reconfigures in place.
    return RouterDeployment.options(  # type: ignore[attr-defined]  # added by @serve.deployment
        name="router",
        num_replicas=rd.num_replicas,
        max_ongoing_requests=rd.max_ongoing_requests,
        max_queued_requests=rd.max_queued_requests,
        ray_actor_options={"num_cpus": rd.num_cpus},
        # Only the settings written in the config: defaults must not override a loaded artifact's fitted values.
        user_config={"router": router.model_dump(mode="json", exclude_unset=True)},
    ).bind(init_config, handles, discovery=discovery, residency=residency)


def bind_residency_coordinator(
    settings: ResidencyConfig, handles: dict[str, Any], discovery: dict[str, Any] | None = None
):
    """The one owner of a memory budget, shared by every router replica (see its module)."""
    from deployments.residency_coordinator import ResidencyCoordinator

    return ResidencyCoordinator.options(name="residency").bind(  # type: ignore[attr-defined]
        settings.model_dump(mode="json"), handles, discovery=discovery
    )


def build_application(
    config: ServiceConfig, expert_deployment=None, expert_extra_args: dict[str, dict[str, Any]] | None = None
):
    """Bind one deployment per expert and the router ingress holding a handle to each."""
    if expert_deployment is None:
        from deployments.expert import ExpertDeployment as expert_deployment
    # Fail here, in the driver, on a bad artifact rather than in a replica that Serve keeps restarting.
    from router_service.serving.assembly import build_strategies

    build_strategies(config)  # embedders load nothing until their first encode
    handles = {}
    budget = config.residency.max_resident_experts
    for index, expert in enumerate(config.experts):
        # Matches ResidencyManager's initial state: the first `budget` experts in config order start loaded.
        start_loaded = expert.start_loaded and (budget is None or index < budget)
        handles[expert.id] = bind_expert(
            expert, expert_deployment, start_loaded, **(expert_extra_args or {}).get(expert.id, {})
        )
    init_config = config.model_dump(mode="json", exclude={"router"})
    coordinator = bind_residency_coordinator(config.residency, handles) if budget is not None else None
    return bind_router(init_config, config.router, config.router_deployment, handles, residency=coordinator)


def build_app(args: dict[str, Any]):
    """Every expert and the router in one application (`import_path: deployments.app:build_app`).

    Needed for `residency` (one budget over all experts). Any change to its args redeploys all of it."""
    logging.basicConfig(level=logging.INFO)
    config = prepare_config(args)
    log.info("CoE app: experts %s, strategy %s", config.expert_ids, config.router.strategy)
    return build_application(config)


def fit_routers_on_built_experts(
    fit: RouterFitConfig, router: RouterConfig, base_dir: Path, experts: list[ExpertConfig] | None = None
) -> None:
    """Build (or wait for) every expert the routers are fitted for, then fit the artifacts on their
    measured quality table (`zoo.routers`: cached, refitted only when the measured table changes)."""
    from router_service.serving.assembly import configured_embedder
    from zoo.routers import fit_routers

    if fit.experts:
        sources = {eid: (src.model, src.build, src.cost) for eid, src in fit.experts.items()}
    elif experts is not None:
        sources = {e.id: (e.model, e.build, e.cost) for e in experts}
    else:
        raise ConfigError("fit.experts: required in the router application (expert id → model, build, cost)")
    model_dirs = {}
    for expert_id, (model, build, _) in sources.items():
        model_dirs[expert_id] = _resolve_path(model, base_dir)
        if build:
            try:
                ensure_model(model_dirs[expert_id], build)
            except ConfigError as exc:
                raise ConfigError(f"fit.experts.{expert_id}.build: {exc.message}") from None
        if not Path(model_dirs[expert_id]).is_dir():
            raise ConfigError(
                f"fit.experts.{expert_id}.model: no model directory at {model_dirs[expert_id]}; routers "
                "are fitted on models measured here, so it must be a local folder"
            )
        ensure_quality_record(model_dirs[expert_id], expert_id)
    prices = {
        eid: {"input_price": cost.input_per_mtok, "output_price": cost.output_per_mtok}
        for eid, (_, _, cost) in sources.items()
    }
    params = {"category": {"default_expert": fit.default_expert}} if fit.default_expert else {}
    fit_routers(
        model_dirs,
        _resolve_path(fit.out_dir, base_dir),
        prices,
        strategies=fit.strategies,
        params=params,
        embedder=configured_embedder(router.embedder, router),
        progress=log.info,
    )


def prepare_router_app(args: dict[str, Any] | RouterAppConfig, base_dir: Path | None = None) -> RouterAppConfig:
    from router_service.serving.assembly import check_artifacts

    app = parse_router_app_config(args)
    base = _base_dir(base_dir)
    app = app.model_copy(
        update={
            "router": _resolve_router_paths(app.router, base),
            "gateway": prepare_gateway(app.gateway, app.server, base),
        }
    )
    if app.fit is not None:
        fit_routers_on_built_experts(app.fit, app.router, base)
    # Fail at deploy time on a missing or broken artifact, before any expert is known.
    check_artifacts(app.router)
    return app


def build_router_app(args: dict[str, Any]):
    """The router alone (`import_path: deployments.app:build_router_app`); it discovers expert applications."""
    logging.basicConfig(level=logging.INFO)
    app = prepare_router_app(args)
    log.info("CoE router app: strategy %s; experts are discovered", app.router.strategy)
    init_config = app.model_dump(mode="json", exclude={"router", "discovery"})
    discovery = app.discovery.model_dump(mode="json")
    coordinator = None
    if app.residency.max_resident_experts is not None:
        coordinator = bind_residency_coordinator(app.residency, {}, discovery=discovery)
    return bind_router(init_config, app.router, app.router_deployment, {}, discovery=discovery, residency=coordinator)


def build_expert_app(args: dict[str, Any]):
    """One expert (`import_path: deployments.app:build_expert_app`, args = one `experts[]` entry)."""
    from deployments.expert import ExpertDeployment

    logging.basicConfig(level=logging.INFO)
    expert = prepare_expert(parse_expert_app_config(args), "", _base_dir(None))
    log.info("CoE expert app: %s (%s)", expert.id, expert.model)
    return bind_expert(expert, ExpertDeployment, start_loaded=expert.start_loaded)
