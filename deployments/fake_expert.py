"""Test double of ExpertDeployment (same methods), backed by FakeExpertBackend. Used by tests/serve only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve

from deployments.expert_shell import ExpertShell
from router_service.experts.fake import OffloadableFakeExpert


@serve.deployment
class FakeExpertDeployment(ExpertShell):
    def __init__(
        self,
        expert_id: str,
        model: str,
        engine_args: dict[str, Any],
        start_loaded: bool = True,
        describe: dict[str, Any] | None = None,
        fake: dict[str, Any] | None = None,
    ) -> None:
        self.description = describe or {"id": expert_id, "model": model}
        self.backend = OffloadableFakeExpert(expert_id, loaded=start_loaded, **(fake or {}))

    async def check_health(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        """What the engine really did: calls, whether it is loaded now, and when it held memory (tests
        check residency against it, not against the router's bookkeeping)."""
        return {
            "calls": self.backend.calls,
            "cancelled": self.backend.cancelled,
            "in_flight": self.backend.in_flight,
            "loaded": int(self.backend.loaded),
            "loads": self.backend.loads,
            "timeline": list(self.backend.timeline),
        }


def build_fake_app(args: dict[str, Any]):
    """Application builder like `deployments.app:build_app`, with fake experts: args = {config, fakes}."""
    from deployments.app import build_application, prepare_config

    config = prepare_config(args["config"], check_engine_args=False)
    fakes = args.get("fakes") or {}
    return build_application(
        config, FakeExpertDeployment, {expert_id: {"fake": fake} for expert_id, fake in fakes.items()}
    )


def build_fake_expert_app(args: dict[str, Any]):
    """Like `deployments.app:build_expert_app`, with a fake: args = {expert: <experts[] entry>, fake: {...}}."""
    from deployments.app import bind_expert, prepare_expert
    from router_service.config.apps import parse_expert_app_config

    expert = prepare_expert(parse_expert_app_config(args["expert"]), "", Path.cwd(), check_engine_args=False)
    return bind_expert(expert, FakeExpertDeployment, start_loaded=expert.start_loaded, fake=args.get("fake") or {})
