"""Fitted-router artifacts: one joblib file written by `python -m router_service.cli.fit`, read at start-up.

The file holds a dict: a format tag and version, the strategy name and class, the expert ids it was
fitted for, the embedder name, library versions, and the fitted strategy object itself with its
embedder removed (an embedder is a live model, and the router injects its own on load).

Joblib files are pickles: load only artifacts you built or trust, exactly like the model weights.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router_service.errors import ConfigError
from router_service.routing.embedding import embedder_fingerprint, embedder_keep
from router_service.routing.strategies.base import RoutingStrategy

ARTIFACT_FORMAT = "coe-router-artifact"
FORMAT_VERSION = 1

__all__ = [
    "ARTIFACT_FORMAT",
    "FORMAT_VERSION",
    "save_artifact",
    "load_artifact",
    "read_artifact_info",
    "expert_mismatch",
]


def _versions() -> dict[str, str]:
    import numpy
    import sklearn

    from router_service import __version__

    return {"router_service": __version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__}


def save_artifact(
    strategy: RoutingStrategy,
    path: str | os.PathLike,
    *,
    embedder_name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write `strategy` (fitted) to `path` atomically and return the path.

    `embedder_name` overrides the injected embedder's name (for strategies fitted on precomputed
    embeddings without an embedder object, which embedded the head of long prompts).
    """
    strategy.check_fitted()
    embedder = getattr(strategy, "embedder", None)
    name = embedder_name or (getattr(embedder, "name", None) if embedder is not None else None)
    keep = embedder_keep(embedder)
    state = copy.copy(strategy)  # shallow: only the embedder reference differs from the live object
    state.embedder = None
    payload = {
        "format": ARTIFACT_FORMAT,
        "format_version": FORMAT_VERSION,
        "strategy": strategy.name,
        "class": f"{type(strategy).__module__}:{type(strategy).__qualname__}",
        "fitted_experts": list(strategy.fitted_experts) if strategy.fitted_experts is not None else None,
        "embedder": name if strategy.needs_embedding else None,
        "embedder_sha256": embedder_fingerprint(name) if strategy.needs_embedding and name else None,
        # Which end of a long prompt was embedded: part of the vector space, like the name.
        "embedder_keep": keep if strategy.needs_embedding else None,
        "params": {k: v for k, v in strategy.get_params().items() if _plain(v)},
        "versions": _versions(),
        "metadata": dict(metadata or {}),
        "state": state,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    import joblib

    # Write then rename, so a crash never leaves a half-written artifact where the router looks.
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        joblib.dump(payload, tmp, compress=3)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, tuple, dict))


def _read_payload(path: str | os.PathLike) -> dict[str, Any]:
    source = Path(path)
    if not source.is_file():
        raise ConfigError(
            f"router artifact '{source}' does not exist; build it with "
            f"`python -m router_service.cli.fit ... --out {source}`",
            code="artifact_missing",
        )
    import joblib

    try:
        payload = joblib.load(source)
    except Exception as exc:  # a truncated/garbled pickle raises almost anything
        raise ConfigError(
            f"router artifact '{source}' is corrupt or not a router artifact ({type(exc).__name__}: {exc})",
            code="artifact_corrupt",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
        raise ConfigError(f"router artifact '{source}' is not a {ARTIFACT_FORMAT} file", code="artifact_corrupt")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"router artifact '{source}' has format version {version!r}; this router reads "
            f"version {FORMAT_VERSION}: refit it with `python -m router_service.cli.fit`",
            code="artifact_version",
        )
    if not isinstance(payload.get("state"), RoutingStrategy):
        raise ConfigError(f"router artifact '{source}' holds no routing strategy", code="artifact_corrupt")
    return payload


def read_artifact_info(path: str | os.PathLike) -> dict[str, Any]:
    """The artifact's header (everything but the fitted state), for logs and `/health`."""
    return {k: v for k, v in _read_payload(path).items() if k != "state"}


def load_artifact(path: str | os.PathLike, embedder: Any = None, *, strategy: str | None = None) -> RoutingStrategy:
    """Read a fitted strategy and inject an embedder (`embedder`, else one made from the recorded name).

    `strategy`: the name config expects; a different strategy in the file is a ConfigError. An
    injected embedder whose name differs from the recorded one is refused too: the fitted state lives
    in that embedder's vector space.
    """
    payload = _read_payload(path)
    state: RoutingStrategy = payload["state"]
    if strategy is not None and payload.get("strategy") != strategy:
        raise ConfigError(
            f"router artifact '{path}' holds strategy '{payload.get('strategy')}', but config asks for '{strategy}'",
            code="artifact_mismatch",
        )
    if state.needs_embedding:
        recorded = payload.get("embedder")
        keep = payload.get("embedder_keep") or "head"  # artifacts written before it was recorded kept the head
        if embedder is None:
            if recorded is None:
                raise ConfigError(
                    f"router artifact '{path}' records no embedder; pass one to load_artifact", code="artifact_embedder"
                )
            from router_service.routing.embedding import make_embedder

            embedder = make_embedder(recorded, keep=keep)
        elif recorded is not None and getattr(embedder, "name", recorded) != recorded:
            raise ConfigError(
                f"router artifact '{path}' was fitted with embedder '{recorded}', not "
                f"'{getattr(embedder, 'name', None)}'",
                code="artifact_embedder",
            )
        elif embedder_keep(embedder) != keep:
            raise ConfigError(
                f"router artifact '{path}' was fitted on the {keep} of long prompts, but the embedder given "
                f"keeps the {embedder_keep(embedder)}",
                code="artifact_embedder",
            )
        wanted = payload.get("embedder_sha256")
        if wanted is not None and recorded is not None and embedder_fingerprint(recorded) != wanted:
            raise ConfigError(
                f"router artifact '{path}' was fitted with the router encoder at '{recorded}' whose weights had "
                f"SHA-256 {wanted[:16]}…; that folder now holds other weights (retrained?): refit the artifact",
                code="artifact_embedder",
            )
        state.set_embedder(embedder)
    return state


def expert_mismatch(strategy: RoutingStrategy, expert_ids: Sequence[str]) -> dict[str, list[str]]:
    """Configured experts the artifact never saw (`unknown`: never chosen) and fitted experts that are
    not configured (`missing`: their prompts go to the next-best expert)."""
    fitted = strategy.fitted_experts
    if fitted is None:
        return {"unknown": [], "missing": []}
    return {
        "unknown": [e for e in expert_ids if e not in fitted],
        "missing": [e for e in fitted if e not in expert_ids],
    }
