"""Per-key limits: requests and tokens per minute, and a spend budget per day or month.

Admission happens before routing: a key over any limit gets 429 with `Retry-After` and OpenAI's
`x-ratelimit-*` headers, and its request never reaches an expert. Tokens and spend are only known
once the answer is complete, so they are charged then (`charge`), and a key is refused once what
it has used reaches its limit: the last request of a window may overshoot by its own size, as
OpenAI's token limits and LiteLLM's budgets do.

A key with `near_budget: cheaper` is steered before it is refused: past `cheaper_from` of its
budget, λ (the cost weight of `cost_aware`) is raised towards 1 in proportion to what is spent.
"""

from __future__ import annotations

import asyncio
import calendar
import hmac
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from router_service.config.gateway import GatewayConfig, KeyLimits, key_hash
from router_service.errors import ConfigError, GatewayStoreError, RateLimitError
from router_service.gateway.counters import CounterStore, open_store

log = logging.getLogger("coe.gateway")
T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the key's name and hash (never the key) and its limits."""

    name: str
    hashed: str
    limits: KeyLimits


class KeyRing:
    """Every accepted key, by hash. A presented key is hashed and compared with each stored hash in
    constant time, so neither the keys nor the timing of a comparison give one away."""

    def __init__(self, callers: Sequence[Caller]) -> None:
        self.callers = list(callers)

    @classmethod
    def from_config(cls, gateway: GatewayConfig, plain_keys: Sequence[str]) -> KeyRing:
        callers: list[Caller] = []
        for index, key in enumerate(gateway.keys):
            try:
                callers.append(Caller(key.name, key.hashed(), key))
            except ValueError as exc:
                raise ConfigError(f"gateway.keys[{index}]: {exc}") from None
        named = {c.hashed for c in callers}
        for plain in plain_keys:
            hashed = key_hash(plain)
            if hashed not in named:  # a named entry wins: it carries the key's own limits
                callers.append(Caller(f"key-{hashed[:8]}", hashed, gateway.default_limits))
                named.add(hashed)
        return cls(callers)

    def __bool__(self) -> bool:
        return bool(self.callers)

    def find(self, presented: bytes) -> Caller | None:
        hashed = key_hash(presented.decode("utf-8", errors="replace")).encode()
        found = None
        for caller in self.callers:
            if hmac.compare_digest(hashed, caller.hashed.encode()):
                found = caller
        return found


def _window_end(kind: str, now: float) -> float:
    if kind == "minute":
        return (math.floor(now / 60) + 1) * 60
    today = datetime.fromtimestamp(now, timezone.utc)
    if kind == "day":
        return calendar.timegm((today.year, today.month, today.day, 0, 0, 0)) + 86_400
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


def _window_name(kind: str, now: float) -> str:
    return str(int(_window_end(kind, now)))


def _reset(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`."""
    whole = max(math.ceil(seconds), 0)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass
class Admission:
    """What admission decided: the response headers, and a λ floor when the budget steers routing."""

    caller: Caller | None
    headers: dict[str, str] = field(default_factory=dict)
    cost_weight_floor: float | None = None
    budget_report: dict[str, Any] | None = None


class Limiter:
    def __init__(self, store: CounterStore, timeout_s: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self.clock = clock

    @classmethod
    def from_config(cls, gateway: GatewayConfig) -> Limiter:
        try:
            store = open_store(gateway.store, gateway.store_timeout_s)
        except Exception as exc:
            raise ConfigError(f"gateway.store: cannot open '{gateway.store}': {exc}") from None
        return cls(store, gateway.store_timeout_s)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call off the event loop, under the store's deadline: past it, 503 (never a hang)."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.timeout_s)
        except Exception as exc:  # timeout, lock contention, connection refused: all mean no answer
            log.warning("counter store failed: %s", type(exc).__name__)
            raise GatewayStoreError(
                "the rate-limit store did not answer in time; retry shortly",
                headers={"retry-after": "1"},
            ) from None

    def _names(self, caller: Caller, now: float) -> dict[str, tuple[str, float]]:
        """kind → (counter name, expiry)."""
        limits = caller.limits
        budget_kind = limits.budget_period
        return {
            "requests": (f"{caller.hashed}:req:{_window_name('minute', now)}", _window_end("minute", now)),
            "tokens": (f"{caller.hashed}:tok:{_window_name('minute', now)}", _window_end("minute", now)),
            "budget": (f"{caller.hashed}:usd:{_window_name(budget_kind, now)}", _window_end(budget_kind, now)),
        }

    async def admit(self, caller: Caller | None, requests: int = 1) -> Admission:
        """Admit `requests` requests of `caller` (a batch counts each item) or raise RateLimitError."""
        if caller is None or not caller.limits.limited:
            return Admission(caller)
        limits, now = caller.limits, self.clock()
        names = self._names(caller, now)
        tokens_used, spent = await self._run(self.store.read, [names["tokens"][0], names["budget"][0]])
        headers: dict[str, str] = {}
        if limits.tokens_per_minute is not None:
            reset = names["tokens"][1] - now
            headers |= {
                "x-ratelimit-limit-tokens": str(limits.tokens_per_minute),
                "x-ratelimit-remaining-tokens": str(max(int(limits.tokens_per_minute - tokens_used), 0)),
                "x-ratelimit-reset-tokens": _reset(reset),
            }
            if tokens_used >= limits.tokens_per_minute:
                self._refuse(
                    "tokens", f"{int(tokens_used)} of {limits.tokens_per_minute} tokens per minute", reset, headers
                )
        report = None
        floor = None
        if limits.budget_usd is not None:
            reset = names["budget"][1] - now
            headers |= {
                "x-coe-budget-limit-usd": f"{limits.budget_usd:.10g}",
                "x-coe-budget-remaining-usd": f"{max(limits.budget_usd - spent, 0.0):.10g}",
                "x-coe-budget-reset": _reset(reset),
            }
            if spent >= limits.budget_usd:
                self._refuse(
                    "budget",
                    f"${spent:.10g} of its ${limits.budget_usd:.10g} {limits.budget_period} budget",
                    reset,
                    headers,
                )
            fraction = spent / limits.budget_usd
            if limits.near_budget == "cheaper":
                floor = min(max((fraction - limits.cheaper_from) / (1.0 - limits.cheaper_from), 0.0), 1.0)
                report = {"spent_fraction": round(fraction, 4), "cost_weight_floor": round(floor, 4)}
        if limits.requests_per_minute is not None:
            name, expires_at = names["requests"]
            taken, used = await self._run(
                self.store.take, name, float(requests), float(limits.requests_per_minute), expires_at
            )
            reset = expires_at - now
            headers |= {
                "x-ratelimit-limit-requests": str(limits.requests_per_minute),
                "x-ratelimit-remaining-requests": str(max(int(limits.requests_per_minute - used), 0)),
                "x-ratelimit-reset-requests": _reset(reset),
            }
            if not taken:
                self._refuse("requests", f"{limits.requests_per_minute} requests per minute", reset, headers)
        return Admission(caller, headers, floor, report)

    @staticmethod
    def _refuse(limit: str, what: str, reset_s: float, headers: dict[str, str]) -> None:
        raise RateLimitError(
            f"this API key is over its limit of {what}; retry after {_reset(reset_s)}",
            code=f"{limit}_limit_exceeded",
            headers={**headers, "retry-after": str(max(math.ceil(reset_s), 1))},
        )

    async def charge(self, caller: Caller | None, tokens: int, cost: float | None) -> None:
        """Count what an answered request used. A store failure here is logged, not raised: the client
        already has its answer."""
        if caller is None or not caller.limits.limited:
            return
        limits, now = caller.limits, self.clock()
        names = self._names(caller, now)
        try:
            if limits.tokens_per_minute is not None and tokens:
                await self._run(self.store.add, names["tokens"][0], float(tokens), names["tokens"][1])
            if limits.budget_usd is not None and cost:
                await self._run(self.store.add, names["budget"][0], float(cost), names["budget"][1])
        except GatewayStoreError:
            log.warning("could not charge key '%s' for %d tokens / $%s", caller.name, tokens, cost)

    def close(self) -> None:
        self.store.close()
