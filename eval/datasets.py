"""Routing-table loaders for the eval harness, plus eval-only helpers (shared-data location, CV folds).

The loaders live in `router_service.data.loaders` because `python -m router_service.cli.fit` needs them too;
they are re-exported here so eval code and notebooks have one import place.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from router_service.data.loaders import (
    TableFormatError,
    category_from_stem,
    estimate_costs,
    estimate_tokens,
    load_prices,
    load_table,
    load_tables,
)

__all__ = [
    "TableFormatError",
    "category_from_stem",
    "estimate_costs",
    "estimate_tokens",
    "load_prices",
    "load_table",
    "load_tables",
    "shared_dir",
    "routing_data_dir",
    "kfold_indices",
]

SHARED_DIR_ENV = "COE_SHARED_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """`$COE_SHARED_DIR`, else `<repo>/../shared` (the data is never copied into the repository)."""
    env = os.environ.get(SHARED_DIR_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared"


def routing_data_dir() -> Path:
    return shared_dir() / "data" / "routing"


def kfold_indices(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, held-out) index pairs over a seeded shuffle; every index is held out exactly once."""
    if k < 2:
        raise ValueError(f"--cv needs K >= 2, got {k}")
    if k > n:
        raise ValueError(f"--cv {k} needs at least {k} prompts, the tables have {n}")
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1 :])), np.sort(fold)) for i, fold in enumerate(folds)]
