"""Scoring rules (router_service.data.scoring) and the per-task figures papers report, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval import metrics, offline
from router_service.data.scoring import apply_scoring
from router_service.data.table import RoutingTable

NAN = float("nan")


def model7_like() -> RoutingTable:
    """mmlu cells are 'probability of the right answer, else 0'; gsm8k cells are mean accuracies."""
    return RoutingTable(
        prompts=["q1", "q2", "q3", "q4"],
        models=["confident", "correct"],
        scores=np.array([[0.9, 0.3], [0.0, 0.2], [0.8, NAN], [0.4, 0.7]]),
        categories=["mmlu", "mmlu", "mmlu", "gsm8k"],
    )


def test_accuracy_counts_a_probability_above_zero_as_correct_and_keeps_sample_means():
    scored = apply_scoring(model7_like(), "accuracy")
    expected = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, NAN], [0.4, 0.7]])
    np.testing.assert_array_equal(scored.scores, expected)  # NaN stays missing; gsm8k untouched


def test_raw_leaves_the_table_alone_and_unknown_rules_fail():
    table = model7_like()
    assert apply_scoring(table, "raw") is table
    with pytest.raises(ValueError, match="unknown scoring rule 'probability'"):
        apply_scoring(table, "probability")


def test_accuracy_changes_which_model_is_best():
    """Raw probabilities reward the confident model; accuracy the correct one (the RouterDC rule)."""
    table = RoutingTable(
        prompts=["q1", "q2", "q3"],
        models=["confident", "correct"],
        scores=np.array([[0.9, 0.3], [0.0, 0.2], [0.0, 0.1]]),
        categories=["mmlu"] * 3,
    )
    assert table.score_matrix().mean(axis=0).tolist() == pytest.approx([0.3, 0.2])  # raw: confident wins
    scored = apply_scoring(table, "accuracy").score_matrix().mean(axis=0)
    assert scored.tolist() == pytest.approx([1 / 3, 1.0])  # accuracy: correct wins


def test_per_task_quality_and_macro_average_by_hand():
    table = apply_scoring(model7_like(), "accuracy")
    choices = np.array([1, 1, 0, 1])  # correct, correct, confident, correct
    per_task = metrics.per_task_quality(table, choices)
    assert per_task == {"gsm8k": pytest.approx(0.7), "mmlu": pytest.approx(1.0)}  # (1+1+1)/3 on mmlu
    assert metrics.macro_average(per_task) == pytest.approx((0.7 + 1.0) / 2)
    assert metrics.outcome(table, choices).quality == pytest.approx((1 + 1 + 1 + 0.7) / 4)  # pooled differs


def test_offline_results_carry_the_rule_per_task_and_macro(tmp_path):
    train = RoutingTable(
        prompts=[f"p{i}" for i in range(12)],
        models=["a", "b"],
        scores=np.array([[0.9, 0.0], [0.0, 0.4]] * 6),
        categories=["mmlu", "gsm8k"] * 6,
    )
    results = offline.run_offline(train, train, strategies=["best_single"], lambdas=(0.0,), scoring="accuracy")
    assert results["scoring"] == "accuracy"
    single_a = results["single_models"]["a"]
    assert single_a["per_task"] == {"gsm8k": 0.0, "mmlu": 1.0} and single_a["macro_quality"] == 0.5
    oracle = results["baselines"]["oracle"]
    assert oracle["per_task"] == {"gsm8k": pytest.approx(0.4), "mmlu": 1.0}
    assert math.isclose(oracle["macro_quality"], 0.7)
    assert "macro_quality" in results["strategies"]["best_single"]
    paths = offline.write_outputs(results, tmp_path, plot=False)
    report = paths["report"].read_text()
    assert "## Per task (scoring: accuracy" in report and "| oracle | 0.4000 | 1 | 0.7000 |" in report
