"""Scoring rules (router_service.data.scoring) and the per-task figures papers report, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval import metrics, offline, report
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
    paths = report.write_outputs(results, tmp_path, plot=False)
    report_text = paths["report"].read_text()
    assert "## Per task (scoring: accuracy" in report_text and "| oracle | 0.4000 | 1 | 0.7000 |" in report_text


def test_bootstrap_intervals_by_hand():
    # Constant values: every replicate has the same mean, so the interval is that point.
    flat = metrics.bootstrap_intervals(np.full(10, 0.5), ["a"] * 5 + ["b"] * 5, n_boot=200)
    assert flat == {"pooled": [0.5, 0.5], "macro": [0.5, 0.5]}
    # Task a all 1, task b all 0: macro is always 0.5 whatever is resampled; pooled weights by size.
    split = metrics.bootstrap_intervals(np.array([1.0] * 3 + [0.0] * 9), ["a"] * 3 + ["b"] * 9, n_boot=200)
    assert split["macro"] == [0.5, 0.5] and split["pooled"] == [0.25, 0.25]
    # Mixed values: the interval brackets the mean and narrows with 100× the data.
    values = np.array([0.0, 1.0] * 10)
    small = metrics.bootstrap_intervals(values, None, n_boot=2000)
    large = metrics.bootstrap_intervals(np.tile(values, 100), None, n_boot=2000)
    assert small["macro"] is None and small["pooled"][0] < 0.5 < small["pooled"][1]
    assert large["pooled"][1] - large["pooled"][0] < (small["pooled"][1] - small["pooled"][0]) / 5


def test_offline_intervals_gain_and_per_prompt_choices():
    table = RoutingTable(
        prompts=[f"p{i}" for i in range(12)],
        models=["a", "b"],
        scores=np.array([[1.0, 0.0], [0.0, 1.0]] * 6),
        categories=["mmlu", "gsm8k"] * 6,
    )
    results = offline.run_offline(table, table, strategies=["best_single"], lambdas=(0.0,), scoring="accuracy")
    row = results["strategies"]["best_single"]
    assert len(row["per_prompt_choice"]) == 12 and set(row["per_prompt_choice"]) <= {0, 1}
    assert row["gain_over_best_single"]["pooled"] == 0.0  # it is the best single model
    assert row["gain_over_best_single"]["ci95"] == {"pooled": [0.0, 0.0], "macro": [0.0, 0.0]}
    quality = row["quality_ci95"]
    assert quality["pooled"] == [0.5, 0.5] and quality["macro"] == [0.5, 0.5]  # 1 on one task, 0 on the other


def test_per_task_aiq_is_each_tasks_own_zero_router_and_curves():
    # Task a: the cheap model is always right; task b: only the expensive one is.
    scores = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    costs = np.array([[1.0, 3.0]] * 4)
    table = RoutingTable(["a1", "a2", "b1", "b2"], ["cheap", "dear"], scores, costs, ["a", "a", "b", "b"])
    always_cheap = np.zeros((2, 4), dtype=int)  # a 2-point λ sweep that never changes its mind
    result = metrics.per_task_aiq(table, {"router": always_cheap, "plain": always_cheap}, {"router"})
    assert set(result) == {"a", "b"} and "plain" not in result["a"]
    # Task a: singles (2, 1) and (6, 0); hull (2, 1) extended flat to 6: area 4 over 6.
    assert result["a"]["zero_router"] == pytest.approx(4 / 6) and result["a"]["router"] == pytest.approx(4 / 6)
    # Task b: singles (2, 0) and (6, 1): the hull climbs from 0 to 1 over [2, 6]: area 2 over 6.
    assert result["b"]["zero_router"] == pytest.approx(2 / 6)
    assert result["b"]["router"] == pytest.approx(0.0)  # always cheap: quality 0 at cost 2
    table.costs = None
    assert metrics.per_task_aiq(table, {"router": always_cheap}, {"router"}) == {}


@pytest.mark.parametrize(
    ("spec", "parsed"), [("labels", (False, None)), ("cluster", (True, None)), ("cluster:4", (True, 4))]
)
def test_categories_option_parses(spec, parsed):
    assert offline.parse_categories(spec) == parsed


@pytest.mark.parametrize("spec", ["cluster:1", "cluster:x", "kmeans"])
def test_categories_option_refuses_bad_specs(spec):
    with pytest.raises(offline.OfflineConfigError, match="--categories"):
        offline.parse_categories(spec)


def test_cluster_hides_labels_from_training_but_not_from_evaluation():
    """With labels the category strategy learns 2 categories; with cluster:3 it learns 3 clusters."""
    from router_service.routing.embedding import HashingEmbedder

    rng = np.random.default_rng(0)
    prompts = [f"{topic} question {i}" for i in range(30) for topic in ("algebra", "history")]
    table = RoutingTable(
        prompts=prompts,
        models=["m", "h"],
        scores=np.array([[1.0, 0.0] if p.startswith("algebra") else [0.0, 1.0] for p in prompts])
        * rng.uniform(0.8, 1.0, (60, 1)),
        categories=["algebra" if p.startswith("algebra") else "history" for p in prompts],
    )
    seen: dict[str, list] = {}
    original = offline._fit

    def spy(strategy, fold_table, embeddings):
        original(strategy, fold_table, embeddings)
        seen.setdefault("labels", []).append(fold_table.categories)
        seen.setdefault("classes", []).append((strategy.clustered_, len(strategy.categories_)))

    offline._fit = spy
    try:
        labelled = offline.run_offline(table, table, strategies=["category"], embedder=HashingEmbedder(64))
        clustered = offline.run_offline(
            table, table, strategies=["category"], embedder=HashingEmbedder(64), categories="cluster:3"
        )
    finally:
        offline._fit = original
    assert seen["labels"][0] is not None and seen["labels"][1] is None
    assert seen["classes"] == [(False, 2), (True, 3)]
    assert clustered["categories"] == "cluster:3" and labelled["categories"] == "labels"
    assert set(clustered["strategies"]["category"]["per_task"]) == {"algebra", "history"}
