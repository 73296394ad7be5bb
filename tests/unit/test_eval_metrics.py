"""Metrics against hand calculations on tiny tables: outcome, oracle, best single, hull, AIQ."""

from __future__ import annotations

import numpy as np
import pytest

from eval import metrics
from router_service.data.table import RoutingTable
from router_service.routing.strategies.baselines import best_single_index

NAN = float("nan")


def table(scores, costs=None) -> RoutingTable:
    scores = np.asarray(scores, dtype=float)
    return RoutingTable(
        prompts=[f"p{i}" for i in range(len(scores))],
        models=[f"m{j}" for j in range(scores.shape[1])],
        scores=scores,
        costs=costs,
    )


# Row 0: m0 and m1 tie on 1.0, m1 is cheaper → m1.  Row 1: m1 and m2 tie on 0.5, m2 is cheaper → m2.
# Row 2: every score missing or 0, every cost 1 → first model (m0), whose score is missing.
ORACLE_TABLE = table(
    [[1.0, 1.0, 0.0], [0.0, 0.5, 0.5], [NAN, 0.0, 0.0]], costs=[[3.0, 1.0, 2.0], [1.0, 2.0, 1.0], [1.0, 1.0, 1.0]]
)


def test_outcome_counts_missing_as_zero_and_sums_cost() -> None:
    result = metrics.outcome(ORACLE_TABLE, [0, 2, 0])
    assert result.quality == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert result.cost == pytest.approx(3.0 + 1.0 + 1.0)
    assert result.missing == 1


def test_outcome_without_costs_costs_one_per_call() -> None:
    result = metrics.outcome(table([[1, 0], [0, 1], [1, 1]]), [0, 0, 1])
    assert result.cost == 3.0
    assert result.quality == pytest.approx(2 / 3)


def test_oracle_best_score_then_cheapest() -> None:
    np.testing.assert_array_equal(metrics.oracle_choices(ORACLE_TABLE), [1, 2, 0])
    oracle = metrics.outcome(ORACLE_TABLE, metrics.oracle_choices(ORACLE_TABLE))
    assert (oracle.quality, oracle.cost, oracle.missing) == (pytest.approx(0.5), pytest.approx(3.0), 1)


def test_oracle_without_costs_takes_first_best() -> None:
    np.testing.assert_array_equal(metrics.oracle_choices(table([[0.2, 0.9, 0.9], [1, 0, 1]])), [1, 0])


def test_best_single_uses_mean_with_missing_as_zero() -> None:
    # Means with missing = 0: m0 (1+0+0)/3, m1 (1+0.5+0)/3, m2 (0+0.5+0)/3 → m1.
    assert best_single_index(ORACLE_TABLE) == 1
    # nanmean would pick m0 (1.0 over its single scored prompt); missing answers earn nothing.
    assert best_single_index(table([[1.0, 0.8], [NAN, 0.8], [NAN, 0.8]])) == 1


def test_best_single_tie_goes_to_cheaper() -> None:
    tied = table([[1, 0, 1], [0, 1, 0]], costs=[[5, 1, 2], [5, 1, 2]])  # every mean is 0.5
    assert best_single_index(tied) == 1


# Float-noise tie: m0's mean is 0.6000000000000001, m1's 0.6; m1 is cheaper. Equal within TIE_TOL, so the
# cheaper wins (an exact comparison would pick m0 for its last bit).
NOISE_TIE = table([[0.1, 0.3], [0.2, 0.2], [0.3, 0.1]], costs=[[5, 1], [5, 1], [5, 1]])
# Missing cost: m0 and m1 tie on quality; m0's one observed cost is 4, m1's mean is 3. Counting m0's missing
# cost as 0 would make it look cheaper (mean 2); it is ignored instead, so m1 (mean 3) wins.
MISSING_COST = table([[1.0, 1.0], [0.0, 0.0]], costs=[[NAN, 3.0], [4.0, 3.0]])


@pytest.mark.parametrize("tbl, expected", [(NOISE_TIE, "m1"), (MISSING_COST, "m1")], ids=["tie", "missing-cost"])
def test_eval_and_strategy_pick_the_same_best_single(tbl: RoutingTable, expected: str) -> None:
    """The eval's best_single baseline and the best_single strategy share one rule."""
    from eval import offline
    from router_service.routing.strategies.baselines import BestSingleStrategy

    assert tbl.models[best_single_index(tbl)] == expected
    assert BestSingleStrategy().fit(tbl).best_ == expected
    results = offline.run_offline(tbl, tbl, strategies=["best_single"], embedder=None)
    assert results["baselines"]["best_single"]["model"] == expected


def test_random_choices_seeded() -> None:
    first = metrics.random_choices(100, 3, seed=7)
    np.testing.assert_array_equal(first, metrics.random_choices(100, 3, seed=7))
    assert set(first.tolist()) == {0, 1, 2}
    assert not np.array_equal(first, metrics.random_choices(100, 3, seed=8))


def test_single_model_points() -> None:
    points = metrics.single_model_points(ORACLE_TABLE)
    assert points["m1"].quality == pytest.approx(0.5) and points["m1"].cost == pytest.approx(4.0)
    assert points["m0"].missing == 1


# ----------------------------------------------------------------------------------------- hull and AIQ
def test_hull_drops_point_below_chord_and_decreasing_point() -> None:
    # (2, 0.6) lies under the chord (1, 0.5)-(3, 0.9) whose height at 2 is 0.7; (4, 0.8) costs more and
    # scores less than (3, 0.9).
    hull = metrics.nondecreasing_hull([[4, 0.8], [2, 0.6], [1, 0.5], [3, 0.9]])
    np.testing.assert_allclose(hull, [[1, 0.5], [3, 0.9]])


def test_hull_keeps_concave_points_and_best_at_equal_cost() -> None:
    hull = metrics.nondecreasing_hull([[1, 0.5], [1, 0.2], [2, 0.8], [3, 0.9]])
    np.testing.assert_allclose(hull, [[1, 0.5], [2, 0.8], [3, 0.9]])  # 0.8 > chord height 0.7: kept


def test_hull_drops_point_exactly_on_chord() -> None:
    np.testing.assert_allclose(metrics.nondecreasing_hull([[0, 0], [1, 0.5], [2, 1.0]]), [[0, 0], [2, 1.0]])


def test_aiq_with_dominated_point_dropped() -> None:
    # Hull (1, 0.5)-(3, 0.9), flat at 0.9 to reference cost 4:
    # area = (0.5 + 0.9) / 2 * 2 + 0.9 * 1 = 2.3; AIQ = 2.3 / 4.
    points = [[1, 0.5], [2, 0.6], [3, 0.9], [4, 0.8]]
    assert metrics.aiq(points, max_cost=4.0) == pytest.approx(0.575)


def test_aiq_flat_extension_to_shared_reference_cost() -> None:
    # A single point (2, 0.8) against reference cost 8: area 0.8 * 6 → AIQ 0.6.
    assert metrics.aiq([[2, 0.8]], max_cost=8.0) == pytest.approx(0.6)
    # Concave curve: (0, 0.2), (1, 0.6), (4, 0.9) to reference 5:
    # 0.4 + 2.25 + 0.9 = 3.55 → 0.71.
    assert metrics.aiq([[0, 0.2], [1, 0.6], [4, 0.9]], max_cost=5.0) == pytest.approx(0.71)


def test_aiq_undefined_without_points_or_cost() -> None:
    assert metrics.aiq([], max_cost=1.0) is None
    assert metrics.aiq([[0, 0.5]], max_cost=0.0) is None


def test_zero_router_aiq_from_single_models() -> None:
    # m0: cost 2 quality 0.5; m1: cost 4 quality 0.75; m2: cost 6 quality 0.5 (dominated by m1).
    t = table([[1, 1, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1]], costs=np.tile([[0.5, 1.0, 1.5]], (4, 1)))
    points = [[o.cost, o.quality] for o in metrics.single_model_points(t).values()]
    np.testing.assert_allclose(points, [[2, 0.5], [4, 0.75], [6, 0.5]])
    ref = metrics.reference_cost([points])
    assert ref == 6
    # Hull (2, 0.5)-(4, 0.75), flat to 6: 1.25 + 1.5 = 2.75 → 2.75 / 6.
    assert metrics.aiq(points, ref) == pytest.approx(2.75 / 6)


def test_task_zero_router_mixes_per_task_hulls_at_the_best_pooled_rate() -> None:
    # Task a: the cheap model is as good as the pricey one. Task b: only the pricey model is right.
    two_tasks = RoutingTable(
        prompts=["a1", "a2", "b1", "b2"],
        models=["cheap", "pricey"],
        scores=np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]),
        costs=np.array([[1.0, 10.0]] * 4),
        categories=["a", "a", "b", "b"],
    )
    curve = metrics.task_zero_router_curve(two_tasks)
    # Both tasks start cheap (cost 4, quality 0.5); then only task b moves to the pricey model (+18 $, +0.5).
    assert curve.tolist() == [[4.0, 0.5], [22.0, 1.0]]
    singles = [[o.cost, o.quality] for o in metrics.single_model_points(two_tasks).values()]
    assert singles == [[4.0, 0.5], [40.0, 1.0]]
    # Against the shared reference cost 40: (18 · 0.75 + 18 · 1.0) / 40, and the zero router 36 · 0.75 / 40.
    assert metrics.aiq(curve, 40.0) == pytest.approx(0.7875)
    assert metrics.aiq(singles, 40.0) == pytest.approx(0.675)
    assert len(metrics.task_zero_router_curve(table([[1.0, 0.0]], costs=[[1.0, 2.0]]))) == 0  # no tasks
