"""The comparison's yardstick (benchmarks/compare.py, compare_stats.py) on hand-made data: normalised
hypervolume against hand-computed areas, the bootstrap and the exact Wilcoxon test against known values,
the equal-wall-clock cut, the front chosen on validation only, latency at matched accuracy, and the
compare.json contract. One end-to-end --quick run on a real local Ray (marked ray and slow)."""

import json
import math

import pytest

from helpers import load_benchmark

compare = load_benchmark("compare")
stats = load_benchmark("compare_stats")


def model(test_acc, latency, memory=10.0, **extra):
    """A retrained model as compare.py records it."""
    return {"test_accuracy": test_acc, "latency_ms": latency, "peak_memory_mb": memory, **extra}


def row(val_acc, latency, **extra):
    """A row a member reported during the search."""
    return {"val_accuracy": val_acc, "latency_ms": latency, "peak_memory_mb": 5.0, "params": 100,
            "genome_hash": f"g{val_acc}-{latency}", "genome": "{}", **extra}


# -- hypervolume ---------------------------------------------------------------------------------------------
def test_the_normalised_hypervolume_matches_the_hand_computed_area():
    models = [model(0.9, 2.0), model(0.8, 1.0), model(0.7, 4.0)]
    bounds = compare.pooled_bounds(models)
    assert bounds["test_error"] == pytest.approx([0.1, 0.3]) and bounds["latency_ms"] == [1.0, 4.0]
    # Scaled (test error, latency): (0, 1/3), (0.5, 0) and (1, 1), which the first dominates. Against
    # (1.1, 1.1): the strip 1.1 x (1.1 - 1/3) plus 0.6 x 1/3 that only the second adds.
    expected = 1.1 * (1.1 - 1 / 3) + 0.6 * (1 / 3)
    assert compare.normalised_hypervolume(models, "latency_ms", bounds) == pytest.approx(expected)


def test_the_axes_are_normalised_over_every_arm_so_one_arm_scores_against_the_pool():
    search, baseline = [model(0.9, 1.0, memory=5.0)], [model(0.7, 3.0, memory=25.0)]
    bounds = compare.pooled_bounds(search + baseline)
    # At the pool's best on both axes: the whole reference box; at its worst on both: the corner 0.1 x 0.1.
    assert compare.normalised_hypervolume(search, "latency_ms", bounds) == pytest.approx(1.1 * 1.1)
    assert compare.normalised_hypervolume(baseline, "peak_memory_mb", bounds) == pytest.approx(0.1 * 0.1)
    assert compare.normalised_hypervolume([], "latency_ms", bounds) == 0.0
    # A model that failed to retrain delivers nothing.
    assert compare.normalised_hypervolume([model(None, 1.0)], "latency_ms", bounds) == 0.0


# -- statistics -----------------------------------------------------------------------------------------------
def test_the_bootstrap_interval_of_the_mean_on_hand_made_data():
    # Two seeds, 0 and 1: resampled means are 0, 0.5 or 1 with chances 1/4, 1/2, 1/4.
    assert stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert stats.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    low, high = stats.bootstrap_ci([0.9, 1.1, 1.3, 1.0, 1.2])
    assert 0.9 < low < 1.1 < high < 1.3
    assert stats.bootstrap_ci([0.9, 1.1, 1.3]) == stats.bootstrap_ci([0.9, 1.1, 1.3])  # a fixed generator


def test_the_wilcoxon_p_value_matches_the_textbook_values():
    # Darwin's Zea mays, crossed minus self-fertilised heights (Fisher, The Design of Experiments): the exact
    # two-sided p-value is 0.041259765625 (signed-rank statistic 24).
    darwin = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
    assert stats.wilcoxon_signed_rank(darwin) == pytest.approx(0.041259765625, abs=1e-12)
    # Five differences of one sign: 2 of the 32 equally likely sign patterns are as extreme.
    assert stats.wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5]) == 2 / 32
    assert stats.wilcoxon_signed_rank([0.1, 0.2, 0.0, 0.3, 0.4, 0.5]) == 2 / 32  # a zero is dropped
    # Tied magnitudes share a mid-rank (1, 2.5, 2.5, 4, 5, positives 1 + 2.5): 6 of 32 patterns sum <= 3.5.
    assert stats.wilcoxon_signed_rank([0.4, -0.9, -0.4, 0.2, -0.6]) == 2 * 6 / 32
    assert stats.wilcoxon_signed_rank([]) == 1.0


def test_a_ratio_summary_has_mean_interval_p_value_and_keeps_each_seed():
    summary = stats.ratio_summary([1.2, 0.9, None, math.inf, 1.5])
    assert summary["mean"] == pytest.approx(1.2) and summary["n"] == 3 and summary["of"] == 5
    assert summary["ci95_low"] <= summary["mean"] <= summary["ci95_high"]
    assert summary["per_seed"] == [1.2, 0.9, None, None, 1.5]
    # The infinite ratio joins the test as the largest log ratio; the missing one is left out.
    logs = [math.log(1.2), math.log(0.9), math.inf, math.log(1.5)]
    assert summary["p_value"] == stats.wilcoxon_signed_rank(logs)


# -- what an arm delivers -------------------------------------------------------------------------------------
def test_each_arm_is_cut_at_the_budget_measured_from_its_own_start():
    rows = [row(0.5, 1.0, timestamp=t) for t in (103, 110, 111, 140)] + [row(0.9, 1.0)]  # the last has no time
    kept = compare.within_wall_clock(rows, start=100.5, budget_seconds=10)
    # Ray stamps whole seconds: 110 may be 110.9, counted (up to a second late, alike for every arm); 111 is cut.
    assert [r["timestamp"] for r in kept] == [103, 110]
    assert compare.trial_epochs(kept, epochs_per_round=2) == 4
    assert compare.trial_epochs([row(0.5, 1.0, round_epochs=3)], epochs_per_round=2) == 3


def test_the_front_is_chosen_on_validation_only():
    chosen = row(0.90, 2.0, test_accuracy=0.80)
    # Better on test but dominated on validation (less accurate and slower): never picked.
    dominated = row(0.85, 3.0, test_accuracy=0.99)
    faster = row(0.70, 1.0, test_accuracy=0.60)
    front = compare.validation_front([chosen, dominated, faster])
    assert [entry["genome_hash"] for entry in front] == [chosen["genome_hash"], faster["genome_hash"]]
    assert compare.validation_front([row(0.99, 0.5, diverged=True), faster]) == compare.validation_front([faster])


def test_a_large_front_is_thinned_to_five_spread_along_it_with_both_ends():
    front = [row(0.50 + k / 100, 1.0 + k) for k in range(9)]  # each faster one less accurate: all on the front
    chosen = compare.validation_front(front)
    assert [entry["latency_ms"] for entry in chosen] == [9.0, 7.0, 5.0, 3.0, 1.0]


def test_latency_at_matched_accuracy_is_the_search_latency_at_the_baselines_best_accuracy():
    baseline = [model(0.90, 2.0), model(0.90, 3.0), model(0.80, 0.5)]  # best 0.90, fastest there 2.0 ms
    search = [model(0.95, 1.5), model(0.92, 1.0), model(0.85, 0.2)]  # at least 0.90: 1.5 and 1.0 ms
    assert compare.latency_at_matched_accuracy(search, baseline) == 0.5
    assert compare.latency_at_matched_accuracy([model(0.85, 0.2)], baseline) == math.inf  # no match
    assert compare.latency_at_matched_accuracy(search, []) is None


def test_the_best_accuracy_within_a_latency_budget():
    models = [model(0.95, 4.0), model(0.90, 2.0), model(0.80, 1.0)]
    assert [compare.best_within(models, budget) for budget in (0.5, 1.0, 3.0, 9.0)] == [None, 0.80, 0.90, 0.95]


def test_the_anytime_hypervolume_only_grows():
    seen = [[1.0, 0.5, 3.0], [4.0, 0.8, 2.0], [9.0, 0.6, 1.0]]
    bounds = {"val_error": [0.2, 0.5], "latency_ms": [1.0, 3.0]}
    curve = compare.anytime_hypervolume(seen, [0.0, 2.0, 5.0, 10.0], bounds)
    assert curve[0] == 0.0 and curve == sorted(curve) and curve[1] == pytest.approx(0.1 * 0.1)


# -- the arms and the results file ------------------------------------------------------------------------------
def test_every_arm_gets_the_same_wall_clock_and_only_random_search_a_finite_member_length(tmp_path):
    plan = compare.PLANS["digits"]
    configs = {arm: compare.search_config(plan, arm, 3, tmp_path) for arm in compare.ARMS}
    assert {c.time_budget_s for c in configs.values()} == {plan.budget_seconds}
    assert configs["random"].rounds == plan.random_rounds
    assert {configs[arm].rounds for arm in ("spidernet", "random_asha", "pbt")} == {compare.ROUNDS}
    assert len({c.name for c in configs.values()}) == len(compare.ARMS)
    assert configs["spidernet"].val_fraction * 1438 >= 400  # digits' training pool: validation of 400+
    assert compare.arm_order(0) == list(compare.ARMS) and compare.arm_order(1) == [*compare.ARMS[1:], "spidernet"]


def arm_record(models, seen=()):
    return {"models": models, "seen": list(seen), "trial_epochs_within": 10, "trial_epochs_reported": 11,
            "rows_cut": 1, "members": 4, "architectures": 6, "wall_seconds": 30.0, "first_row_seconds": 5.0}


def test_compare_json_holds_the_ratio_statistics_per_baseline():
    per_seed = []
    for seed in range(3):
        runs = {"spidernet": arm_record([model(0.95, 1.0 + seed / 10), model(0.9, 0.5)], [[2.0, 0.9, 1.0]]),
                "random": arm_record([model(0.90, 2.0)], [[3.0, 0.8, 2.0]]),
                "random_asha": arm_record([model(0.92, 1.0)]),
                "pbt": arm_record([])}  # delivered nothing
        per_seed.append({"seed": seed, "runs": runs, "handwritten_latency_ms": 1.0})
    block = compare.summarise_dataset(per_seed, budget_seconds=20)
    for baseline in compare.BASELINES:
        for figure in ("hv_latency_ratio", "hv_memory_ratio", "latency_at_matched_accuracy_ratio"):
            assert {"mean", "ci95_low", "ci95_high", "p_value", "per_seed"} <= set(block["ratios"][baseline][figure])
    random = block["ratios"]["random"]
    assert random["latency_at_matched_accuracy_ratio"]["per_seed"] == [0.25, 0.25, 0.25]  # 0.5 ms vs 2 ms
    assert random["hv_latency_ratio"]["mean"] > 1
    # Stock PBT delivered nothing: no hypervolume ratio and no matched latency, but no error either.
    assert block["ratios"]["pbt"]["latency_at_matched_accuracy_ratio"]["per_seed"] == [None] * 3
    assert block["latency_budgets_ms"] == [0.75 * 1.0, 1.5, 3.0]  # multiples of the hand-written network's
    assert block["arms"]["spidernet"]["best_within_budgets"][0]["mean"] == 0.9
    assert len(block["anytime"]["spidernet"]["mean"]) == len(block["anytime"]["seconds"])
    json.dumps(block)  # plain JSON


@pytest.mark.ray
def test_the_quick_run_writes_the_comparison_end_to_end(ray_local, tmp_path):
    report = compare.main(["--quick", "--output", str(tmp_path), "--storage", str(tmp_path / "runs")])
    block = report["datasets"]["digits"]
    assert block["seeds"] == [100]
    assert set(block["ratios"]) == set(compare.BASELINES)
    written = json.loads((tmp_path / "compare.json").read_text())
    assert written["datasets"]["digits"]["per_seed"][0]["order"] == compare.arm_order(100)
    for name in ("compare.md", "compare_digits_test_fronts.png", "compare_digits_anytime.png"):
        assert (tmp_path / name).is_file(), name
    # On a quiet machine most arms report within the quick budget; a heavily loaded one may deliver nothing,
    # and the run still writes every file.
    for run in block["per_seed"][0]["runs"].values():
        assert run["rows_reported"] >= run["rows_cut"] >= 0
        for retrained in run["models"]:
            assert 0 <= retrained["test_accuracy"] <= 1 and retrained["latency_ms"] > 0, retrained


def test_estimate_agreement_is_over_distinct_architectures_and_ranks_and_sizes_them():
    models = [  # estimated (search_*) against measured; "b" twice (two arms delivered it)
        {"genome_hash": "a", "search_latency_ms": 1.0, "latency_ms": 2.0, "search_peak_memory_mb": 4.0, "peak_memory_mb": 4.0},
        {"genome_hash": "b", "search_latency_ms": 2.0, "latency_ms": 3.0, "search_peak_memory_mb": 5.0, "peak_memory_mb": 5.0},
        {"genome_hash": "b", "search_latency_ms": 2.0, "latency_ms": 3.0, "search_peak_memory_mb": 5.0, "peak_memory_mb": 5.0},
        {"genome_hash": "c", "search_latency_ms": 3.0, "latency_ms": 2.5, "search_peak_memory_mb": 6.0, "peak_memory_mb": 3.0},
    ]
    agreement = compare.estimate_agreement(models)
    assert agreement["architectures"] == 3
    assert agreement["latency_ms"]["kendall_tau"] == pytest.approx(1 / 3)  # 2 of 3 pairs in order
    assert agreement["latency_ms"]["median_error"] == pytest.approx(1 / 3)  # errors 0.5, 1/3, 0.2
    assert agreement["peak_memory_mb"]["largest_error"] == pytest.approx(1.0)
