"""/dashboard: a static page (no build step, no CDN) and the small JSON endpoint it polls.

The page at exactly `/dashboard` holds no data, so `ApiKeyAuth` leaves it open; everything it shows
comes from `/dashboard/api/stats` and the playground's ordinary `/v1/chat/completions` calls, which
need the key when keys are configured. The numbers are this replica's (`serving.activity.ActivityLog`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse

from router_service.errors import CoEError, to_error_response
from router_service.serving.activity import ActivityLog
from router_service.serving.service import RouterService

log = logging.getLogger("coe.http")

PAGE = "static/dashboard.html"
NO_STORE = {"cache-control": "no-store"}  # live numbers: a cached copy would be a wrong one


def dashboard_page() -> str:
    return resources.files(__package__).joinpath(PAGE).read_text(encoding="utf-8")


def router_info(service: RouterService) -> dict[str, Any]:
    """What the playground offers: the strategies (with their default λ where they trade cost against
    quality), the experts with their prices, and the token limits."""
    strategies = [
        {
            "name": name,
            "tradeoff": strategy.has_tradeoff,
            "cost_weight": getattr(strategy, "cost_weight", None) if strategy.has_tradeoff else None,
        }
        for name, strategy in sorted(service.strategies.items())
    ]
    experts = [
        {
            "id": card.id,
            "generalist": card.generalist,
            "skills": list(card.skills),
            "input_cost_per_mtok": card.input_cost_per_mtok,
            "output_cost_per_mtok": card.output_cost_per_mtok,
        }
        for card in service.cards
    ]
    server = service.config.server
    return {
        "default_strategy": service.default_strategy,
        "strategies": strategies,
        "experts": experts,
        "max_tokens_limit": server.max_tokens_limit,
        "default_max_tokens": server.default_max_tokens,
    }


def install_dashboard(app: FastAPI, get_service: Callable[[], RouterService], activity: ActivityLog) -> None:
    page = dashboard_page()  # read once: the file ships with the package and does not change

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers=NO_STORE)

    @app.get("/dashboard/api/stats")
    async def dashboard_stats(recent: int = Query(default=50, ge=0, le=activity.max_recent)) -> JSONResponse:
        """This replica's activity, and the router it serves. Without a router (no expert discovered
        yet) the activity is still returned, with `router: null` and the reason in `router_error`."""
        body: dict[str, Any] = {"activity": activity.snapshot(recent=recent), "router": None, "router_error": None}
        try:
            body["router"] = router_info(get_service())
        except Exception as exc:
            if not isinstance(exc, CoEError):
                log.error("dashboard: the router could not be described", exc_info=exc)
            _, error, _ = to_error_response(exc)
            body["router_error"] = error.error.model_dump()
        return JSONResponse(body, headers=NO_STORE)
