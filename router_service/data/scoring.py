"""Scoring rules: what a table's score cell counts as, for training and for evaluation alike.

- `raw`: the cell as stored.
- `accuracy`: what the papers report. In the model7 tables (RouterDC's split), MMLU, CMMLU and ARC
  cells hold the probability the model gave the right answer, or 0 when it answered wrongly; RouterDC
  counts a cell > 0 as correct, and scored that way the tables reproduce its single-model accuracies.
  GSM8K and HumanEval cells are already accuracies (the mean over 10 samples) and stay as they are,
  as do RouterBench's 0/1 cells. Averaging raw probabilities instead rewards confident models over
  correct ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from router_service.data.table import RoutingTable

# Tasks whose cells are "probability of the right answer, else 0" (model7 file stems).
PROBABILITY_TASKS = frozenset({"mmlu", "cmmlu", "arc_challenge", "arc_easy"})
SCORING_RULES = ("raw", "accuracy")


def apply_scoring(table: RoutingTable, rule: str) -> RoutingTable:
    """`table` with its scores under `rule`; missing cells stay missing."""
    if rule not in SCORING_RULES:
        raise ValueError(f"unknown scoring rule '{rule}'; choose one of {', '.join(SCORING_RULES)}")
    if rule == "raw" or table.categories is None:
        return table
    rows = np.array([c in PROBABILITY_TASKS for c in table.categories], dtype=bool)
    if not rows.any():
        return table
    scores = table.scores.copy()
    block = scores[rows]
    scores[rows] = np.where(np.isnan(block), np.nan, (block > 0).astype(np.float64))
    return dataclasses.replace(table, scores=scores)
