"""Gateway settings (`gateway:` in coe.yaml): per-key limits and budgets, the semantic cache, the dashboard.

Keys are named, so that logs, metrics and the dashboard can say whose request it was without ever
showing the key. A key is given as `key_env` (the name of an environment variable: keeps keys out of
YAML), as `key_sha256` (its SHA-256 in hex: the YAML then holds no secret at all), or as `key`.
"""

from __future__ import annotations

import hashlib
import os
from typing import Literal

from pydantic import Field, model_validator

from router_service.config.base import _Strict


def key_hash(key: str) -> str:
    """How a key is stored and compared: SHA-256 hex. The key itself is kept nowhere."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyLimits(_Strict):
    """What one API key may use. Unset: no limit of that kind."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests per clock minute.")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Prompt + completion tokens per clock minute (charged when answered)."
    )
    budget_usd: float | None = Field(
        default=None, gt=0.0, description="Spend per `budget_period` at the experts' configured prices."
    )
    budget_period: Literal["day", "month"] = Field(default="day", description="UTC day or calendar month.")
    near_budget: Literal["refuse", "cheaper"] = Field(
        default="refuse",
        description="`cheaper`: as the budget is used up, λ (routing.cost_weight) rises towards 1 so the key "
        "is routed to cheaper experts before it is refused; `refuse`: only refuse at the budget.",
    )
    cheaper_from: float = Field(
        default=0.5, ge=0.0, lt=1.0, description="`cheaper`: the share of the budget spent where λ starts rising."
    )

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.requests_per_minute, self.tokens_per_minute, self.budget_usd))


class GatewayKey(KeyLimits):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Shown in logs and the dashboard.")
    key: str | None = Field(default=None, min_length=8, description="The key itself (prefer key_env/key_sha256).")
    key_env: str | None = Field(default=None, min_length=1, description="Environment variable holding the key.")
    key_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 hex of the key: no secret in the YAML."
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> GatewayKey:
        given = [n for n in ("key", "key_env", "key_sha256") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"key '{self.name}': give exactly one of key, key_env, key_sha256 (got {given or 'none'})")
        return self

    def hashed(self) -> str:
        """The key's hash; a ConfigError-worthy ValueError when its environment variable is unset."""
        if self.key_sha256 is not None:
            return self.key_sha256
        if self.key_env is not None:
            value = os.environ.get(self.key_env, "").strip()
            if not value:
                raise ValueError(f"key '{self.name}': environment variable {self.key_env} is not set")
            return key_hash(value)
        assert self.key is not None
        return key_hash(self.key)


class CacheConfig(_Strict):
    """Answers repeated and near-identical prompts without calling an expert. Entries are partitioned by
    API key, requested model, routing options and generation parameters, so they never cross tenants."""

    enabled: bool = Field(default=False, description="Off by default.")
    similarity_threshold: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="Cosine of prompt embeddings at or above which a cached answer is reused (exact match "
        "always hits). 1.0: exact matches only.",
    )
    max_entries: int = Field(default=1024, ge=1, description="Per router replica; least recently used go first.")
    ttl_s: float = Field(default=600.0, gt=0.0, description="An entry older than this is never served.")


class GatewayConfig(_Strict):
    store: str = Field(
        default="sqlite:///./models/gateway/counters.sqlite3",
        pattern=r"^(sqlite:///.+|redis://.+|memory://)$",
        description="Where per-key counters live, shared by every router replica and kept across restarts: "
        "`sqlite:///PATH` (one machine), `redis://HOST:PORT/DB` (several nodes), `memory://` (one replica, "
        "lost on restart; for tests).",
    )
    store_timeout_s: float = Field(
        default=2.0, gt=0.0, description="Deadline of one counter operation; past it the request gets 503."
    )
    keys: list[GatewayKey] = Field(default_factory=list, description="Named keys, each with its own limits.")
    default_limits: KeyLimits = Field(
        default_factory=KeyLimits, description="Limits of the keys in server.api_keys and COE_API_KEYS."
    )
    cache: CacheConfig = Field(default_factory=CacheConfig)
    dashboard: bool = Field(default=True, description="Serve /dashboard (needs a key when keys are configured).")

    @model_validator(mode="after")
    def _unique_names(self) -> GatewayConfig:
        seen: set[str] = set()
        for index, key in enumerate(self.keys):
            if key.name in seen:
                raise ValueError(f"keys[{index}].name: duplicate key name '{key.name}'")
            seen.add(key.name)
        return self
