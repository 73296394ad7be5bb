"""A small, clearly separable routing table and a fitted artifact for service-level routing tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from router_service.data.table import RoutingTable
from router_service.routing.artifact import save_artifact
from router_service.routing.embedding import HashingEmbedder
from router_service.routing.strategies.base import get_strategy

MATH = [f"what is {a} plus {b} sum the numbers" for a, b in zip(range(3, 60, 2), range(40, 11, -1))]
WORDS = [
    f"reverse the word {w} and spell it backwards"
    for w in [
        "planet",
        "garden",
        "window",
        "coffee",
        "silver",
        "rocket",
        "bridge",
        "forest",
        "castle",
        "market",
        "pencil",
        "summer",
        "winter",
        "yellow",
        "purple",
        "orange",
        "basket",
        "candle",
        "dragon",
        "island",
        "jungle",
        "kettle",
        "lemon",
        "mirror",
        "needle",
        "oyster",
        "parrot",
        "rabbit",
        "saddle",
        "tunnel",
    ]
]


def separable_table() -> RoutingTable:
    prompts = MATH + WORDS
    # math is right on math, text on words, general half-right everywhere.
    scores = np.array([[1.0, 0.0, 0.5]] * len(MATH) + [[0.0, 1.0, 0.5]] * len(WORDS))
    categories = ["math"] * len(MATH) + ["words"] * len(WORDS)
    return RoutingTable(prompts=prompts, models=["math", "text", "general"], scores=scores, categories=categories)


def fitted_artifact(path: Path, strategy: str = "category", models: list[str] | None = None) -> Path:
    table = separable_table()
    if models is not None:
        table = table.select_models(models)
    fitted = get_strategy(strategy).set_embedder(HashingEmbedder(dim=256)).fit(table)
    return save_artifact(fitted, path)
