"""Specification of multi-objective ranking: sorting, crowding, hypervolume, archive, parsing."""

import json
import math

import numpy as np
import pytest

from spidernet_ray.pareto import (
    DEFAULT_OBJECTIVES,
    Objective,
    ParetoArchive,
    budget_violation,
    crowding_distance,
    dominates,
    hypervolume,
    hypervolume_2d,
    nondominated_sort,
    objective_matrix,
    parse_objective,
    parse_objectives,
    pareto_rank,
    rank_population,
)

OBJECTIVES = ["max:val_accuracy", "min:latency_ms"]


def as_lists(fronts):
    return [front.tolist() for front in fronts]


# Objectives and conversion


def test_parse_objective_reads_mode_and_metric():
    assert parse_objective("max:val_accuracy") == Objective(metric="val_accuracy", mode="max")
    assert parse_objective("min:latency_ms") == Objective(metric="latency_ms", mode="min")


@pytest.mark.parametrize("spec", ["val_accuracy", "max:", ":val_accuracy", ""])
def test_parse_objective_rejects_malformed_spec(spec):
    with pytest.raises(ValueError, match="must look like"):
        parse_objective(spec)


def test_parse_objective_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode 'maximize'"):
        parse_objective("maximize:val_accuracy")


def test_parse_objectives_rejects_empty_and_duplicate_metrics():
    with pytest.raises(ValueError, match="at least one"):
        parse_objectives([])
    with pytest.raises(ValueError, match="only one objective"):
        parse_objectives(["max:val_accuracy", "min:val_accuracy"])


def test_default_objectives_are_accuracy_and_latency():
    assert [str(objective) for objective in DEFAULT_OBJECTIVES] == ["max:val_accuracy", "min:latency_ms"]


def test_objective_matrix_negates_max_objectives():
    matrix = objective_matrix([{"val_accuracy": 0.9, "latency_ms": 3.0}], OBJECTIVES)
    np.testing.assert_array_equal(matrix, [[-0.9, 3.0]])


def test_objective_matrix_treats_missing_or_non_finite_metric_as_worst():
    results = [{"latency_ms": 3.0}, {"val_accuracy": math.nan, "latency_ms": math.inf}]
    np.testing.assert_array_equal(objective_matrix(results, OBJECTIVES), [[np.inf, 3.0], [np.inf, np.inf]])


# Budgets


def test_budget_violation_is_zero_within_budget_or_without_budgets():
    metrics = {"latency_ms": 5.0, "peak_memory_mb": 100.0}
    assert budget_violation(metrics, {"latency_ms": 5.0, "peak_memory_mb": 200.0}) == 0.0
    assert budget_violation(metrics, {}) == 0.0
    assert budget_violation(metrics, None) == 0.0


def test_budget_violation_sums_relative_excess():
    metrics = {"latency_ms": 15.0, "peak_memory_mb": 300.0}
    assert budget_violation(metrics, {"latency_ms": 10.0, "peak_memory_mb": 200.0}) == pytest.approx(1.0)


def test_budget_violation_counts_missing_metric_as_violating():
    assert budget_violation({"latency_ms": 1.0}, {"peak_memory_mb": 200.0}) == math.inf


# Dominance and non-dominated sorting


def test_dominance_needs_no_worse_everywhere_and_better_somewhere():
    assert dominates([1.0, 2.0], [1.0, 3.0])
    assert not dominates([1.0, 3.0], [1.0, 2.0])
    assert not dominates([1.0, 2.0], [1.0, 2.0])
    assert not dominates([1.0, 3.0], [2.0, 2.0])


def test_nondominated_sort_peels_fronts_best_first():
    values = [[1, 3], [3, 1], [2, 2], [2, 3], [3, 3], [4, 4]]
    assert as_lists(nondominated_sort(values)) == [[0, 1, 2], [3], [4], [5]]


def test_infeasible_excellent_member_ranks_below_every_feasible_member():
    values = [[5.0, 5.0], [0.0, 0.0], [9.0, 1.0]]
    assert as_lists(nondominated_sort(values, violations=[0.0, 0.1, 0.0])) == [[0, 2], [1]]


def test_infeasible_members_rank_by_smaller_violation_regardless_of_objectives():
    values = [[0.0, 0.0], [9.0, 9.0], [5.0, 5.0]]
    assert as_lists(nondominated_sort(values, violations=[0.5, 0.1, 0.3])) == [[1], [2], [0]]


def test_infeasible_members_with_equal_violation_share_a_front():
    values = [[0.0, 0.0], [9.0, 9.0]]
    assert as_lists(nondominated_sort(values, violations=[0.2, 0.2])) == [[0, 1]]


def test_nondominated_sort_rejects_nan_values():
    with pytest.raises(ValueError, match="NaN"):
        nondominated_sort([[np.nan, 1.0]])


# Crowding distance and ranking


def test_crowding_distance_hand_example():
    front = [[0, 5], [1, 3], [3, 1], [4, 0]]
    # Objective 0 spans 4, objective 1 spans 5: member 1 gets 3/4 + 4/5, member 2 gets 3/4 + 3/5.
    np.testing.assert_allclose(crowding_distance(front), [np.inf, 1.55, 1.35, np.inf])


def test_crowding_distance_of_one_or_two_members_is_infinite():
    assert crowding_distance([[1.0, 2.0]]).tolist() == [np.inf]
    assert crowding_distance([[1.0, 2.0], [2.0, 1.0]]).tolist() == [np.inf, np.inf]


def test_crowding_distance_ignores_objective_with_zero_range():
    front = [[0.0, 7.0], [1.0, 7.0], [4.0, 7.0]]
    np.testing.assert_allclose(crowding_distance(front), [np.inf, 1.0, np.inf])


def test_crowding_distance_never_produces_nan_with_missing_metrics():
    front = [[0.0, np.inf], [1.0, 5.0], [2.0, 4.0], [3.0, 3.0]]
    assert not np.isnan(crowding_distance(front)).any()


def test_pareto_rank_gives_front_and_crowding_per_member():
    front_index, crowding = pareto_rank([[1, 3], [3, 1], [2, 3]])
    assert front_index.tolist() == [0, 0, 1]
    assert crowding.tolist() == [np.inf, np.inf, np.inf]


def test_rank_population_orders_by_front_then_crowding_then_index():
    # Members: 0=E(2,4) 1=A(0,5) 2=C(3,1) 3=F(5,5) 4=D(4,0) 5=B(1,3).
    # Front 0 is A, B, C, D (A and D boundary, B more isolated than C); E is front 1, F front 2.
    values = [[2, 4], [0, 5], [3, 1], [5, 5], [4, 0], [1, 3]]
    assert rank_population(values).tolist() == [1, 4, 5, 2, 0, 3]


def test_rank_population_breaks_ties_by_index():
    assert rank_population(np.ones((5, 3))).tolist() == [0, 1, 2, 3, 4]


def test_rank_population_with_an_rng_breaks_ties_at_random_and_only_ties():
    values = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 3.0]])  # a front of two, then 2, then 3
    firsts = {int(rank_population(values, rng=np.random.default_rng(seed))[0]) for seed in range(20)}
    assert firsts == {0, 1}
    for seed in range(20):
        assert rank_population(values, rng=np.random.default_rng(seed)).tolist()[2:] == [2, 3]


def test_rank_population_puts_budget_violators_last():
    values = [[0.0, 0.0], [5.0, 5.0], [6.0, 4.0]]
    assert rank_population(values, violations=[1.0, 0.0, 0.0]).tolist() == [1, 2, 0]


# Hypervolume


def test_hypervolume_2d_hand_value():
    assert hypervolume_2d([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_2d_dominated_point_adds_nothing():
    assert hypervolume_2d([[1, 3], [2, 2], [3, 1], [3, 3]], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_2d_point_outside_or_on_reference_adds_nothing():
    assert hypervolume_2d([[1, 3], [2, 2], [3, 1], [5, 0], [4, 0]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume_2d([], [4, 4]) == 0.0


def test_hypervolume_3d_single_box():
    assert hypervolume([[1, 1, 1]], [2, 3, 4]) == pytest.approx(6.0)


def test_hypervolume_3d_overlapping_boxes_by_inclusion_exclusion():
    # Boxes 9 and 3 overlap in a unit cube: 9 + 3 - 1.
    assert hypervolume([[0, 0, 2], [2, 2, 0]], [3, 3, 3]) == pytest.approx(11.0)
    # Three boxes of 6, pairwise overlaps of 2, triple overlap 1: 18 - 6 + 1.
    assert hypervolume([[1, 2, 3], [2, 3, 1], [3, 1, 2]], [4, 4, 4]) == pytest.approx(13.0)


def test_hypervolume_4d_overlapping_boxes():
    # Boxes 8 and 2 overlap in a unit hypercube: 8 + 2 - 1.
    assert hypervolume([[0, 0, 0, 1], [1, 1, 1, 0]], [2, 2, 2, 2]) == pytest.approx(9.0)


def test_hypervolume_agrees_with_hypervolume_2d():
    points = np.random.default_rng(0).random((30, 2))
    assert hypervolume(points, [1.0, 1.0]) == pytest.approx(hypervolume_2d(points, [1.0, 1.0]))


# Archive


def entry(accuracy, latency):
    return {"val_accuracy": accuracy, "latency_ms": latency}


def test_archive_keeps_only_non_dominated_entries():
    archive = ParetoArchive(OBJECTIVES)
    assert archive.add("slow", entry(0.9, 10.0))
    assert archive.add("fast", entry(0.8, 2.0))
    assert not archive.add("worse", entry(0.7, 5.0))
    assert archive.add("better", entry(0.95, 2.0))
    assert [member["key"] for member in archive.front()] == ["better"]
    assert len(archive) == 1


def test_archive_ignores_infeasible_entries():
    archive = ParetoArchive(OBJECTIVES)
    assert not archive.add("over_budget", entry(0.99, 1.0), violation=0.3)
    assert len(archive) == 0


def test_archive_entry_with_same_key_replaces_old_one():
    archive = ParetoArchive(OBJECTIVES)
    archive.add("trial_1", entry(0.5, 10.0))
    archive.add("trial_1", entry(0.6, 10.0))
    assert archive.front() == [{"key": "trial_1", "metrics": entry(0.6, 10.0), "payload": None}]


def test_archive_round_trips_through_json():
    archive = ParetoArchive(OBJECTIVES)
    archive.add("a", {**entry(0.9, 10.0), "params": 1234}, payload={"genome": [1, 2, 3]})
    archive.add("b", entry(0.8, 2.0))
    restored = ParetoArchive.from_dict(json.loads(json.dumps(archive.to_dict())))
    assert restored.objectives == archive.objectives
    assert restored.front() == archive.front()
    assert restored.front()[0]["payload"] == {"genome": [1, 2, 3]}


def test_archive_keeps_only_objective_metrics_as_finite_floats():
    archive = ParetoArchive(OBJECTIVES)
    archive.add("a", {"val_accuracy": np.float32(0.5), "latency_ms": math.inf, "params": 1234})
    assert archive.front()[0]["metrics"] == {"val_accuracy": 0.5}
