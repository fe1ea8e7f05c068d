"""The comparison benchmark's own machinery (benchmarks/compare.py), on hand-made rows: hypervolume
against hand-computed areas, the equal-budget cut (longer rounds of macro mutations included), snapshots
scored with their rows, time to target, the ratios and the variants' comparison with plain SpiderNet."""

import json
import math

import pytest

from helpers import BENCHMARKS, load_benchmark

compare = load_benchmark("compare")

REFERENCE = {"val_error": 1.0, "latency_ms": 4.0, "peak_memory_mb": 10.0}


def row(acc, latency, memory=5.0, **extra):
    return {"val_accuracy": acc, "latency_ms": latency, "peak_memory_mb": memory, "params": 100, **extra}


def test_hypervolume_of_a_front_matches_the_hand_computed_area():
    # Costs (val error, latency): (0.1, 2) and (0.2, 1) against (1, 4): boxes 0.9 x 2 and 0.8 x 3 overlapping
    # in 0.8 x 2, so 1.8 + 2.4 - 1.6 = 2.6. (0.5, 3) is dominated and adds nothing.
    rows = [row(0.9, 2.0), row(0.8, 1.0), row(0.5, 3.0)]
    assert compare.front_hypervolume(rows, "latency_ms", REFERENCE) == pytest.approx(2.6)


def test_rows_outside_the_reference_or_diverged_add_nothing_to_the_hypervolume():
    rows = [row(0.9, 2.0), row(0.8, 1.0)]
    extra = [row(0.99, 5.0), row(0.99, 0.5, diverged=True), row(0.95, 0.1, memory=12.0)]
    assert compare.front_hypervolume(rows + extra[:2], "latency_ms", REFERENCE) == pytest.approx(2.6)
    assert compare.outside_reference(rows + extra, REFERENCE) == 2  # latency 5 > 4, memory 12 > 10
    # One point alone: (1 - acc) x (reference - memory).
    assert compare.front_hypervolume([row(0.75, 1.0, memory=6.0)], "peak_memory_mb", REFERENCE) == pytest.approx(0.75 * 4)


def test_every_run_is_cut_at_the_same_trial_epoch_budget_in_arrival_order():
    population, rounds, epochs = 3, 4, 2
    budget = population * rounds * epochs
    longer = [row(0.5 + i / 100, 1.0, timestamp=i) for i in range(population * rounds + 2)]  # a clone fell behind
    exact = longer[: population * rounds]
    for rows in (longer, exact):
        counted = compare.within_budget(rows, budget, epochs)
        assert compare.trial_epochs(counted, epochs) == budget
        assert counted == rows[: population * rounds]  # the first rows to arrive
    shorter = longer[: population * rounds - 1]  # a clone jumped ahead: one round less was trained
    assert compare.trial_epochs(compare.within_budget(shorter, budget, epochs), epochs) == budget - epochs


def test_a_run_is_scored_on_its_rows_within_the_budget_only():
    rows = [row(0.5, 2.0, trial_id="a", timestamp=100), row(0.6, 3.0, trial_id="b", timestamp=101),
            row(0.99, 0.5, trial_id="a", timestamp=102)]  # beyond the budget of 2 trial-epochs
    run = compare.evaluate_run(rows, start=99.5, budget=2, epochs_per_round=1, reference=REFERENCE)
    assert run["trial_epochs_counted"] == 2 and run["trial_epochs_reported"] == 3
    assert run["best_val_accuracy"] == 0.6 and run["best"]["trial_id"] == "b"
    assert run["progress"] == [(0.5, 0.5), (1.5, 0.6)]
    # (0.5, 2) and (0.4, 3) against (1, 4): 0.5 x 2, plus the strip 0.1 x 1 only the second adds = 1.1
    assert run["hypervolume_latency"] == pytest.approx(1.1)


def test_time_to_target_is_when_the_best_so_far_first_reaches_it():
    points = [(3.0, 0.5), (7.0, 0.8), (12.0, 0.9)]
    assert compare.time_to_target(points, 0.8) == 7.0
    assert compare.time_to_target(points, 0.85) == 12.0
    assert compare.time_to_target(points, 0.95) is None


def test_the_best_row_prefers_accuracy_then_fewer_params():
    rows = [row(0.8, 1.0, params=500), row(0.9, 1.0, params=300), row(0.9, 1.0, params=200),
            row(0.99, 1.0, diverged=True)]
    assert compare.best_row(rows)["params"] == 200


def test_seed_ratios_and_their_spread():
    def run(hv_latency, hv_memory, best_acc, params, memory, progress):
        return {"hypervolume_latency": hv_latency, "hypervolume_memory": hv_memory, "best_val_accuracy": best_acc,
                "best": {"params": params, "peak_memory_mb": memory, "latency_ms": 1.0}, "progress": progress,
                "test_accuracy": best_acc}

    runs = {"spidernet": run(3.0, 6.0, 0.9, 70, 7.0, [(5.0, 0.7), (10.0, 0.9)]),
            "random": run(2.0, 5.0, 0.8, 100, 10.0, [(4.0, 0.6), (20.0, 0.8)]),
            "pbt": run(1.5, 3.0, 0.7, 50, 4.0, [(2.0, 0.7)])}
    ratios = compare.compare_seed(runs)
    assert ratios["hypervolume_ratio_vs_random"] == {"latency": 1.5, "memory": 1.2}
    assert ratios["hypervolume_ratio_vs_pbt"] == {"latency": 2.0, "memory": 2.0}
    assert ratios["params_ratio_vs_random"] == 0.7 and ratios["memory_ratio_vs_random"] == 0.7
    assert ratios["time_to_target_ratio_vs_random"] == 10.0 / 20.0
    assert runs["pbt"]["time_to_target_s"] is None  # never reached random's 0.8
    stats = compare.spread([0.5, None, 1.5])
    assert stats["mean"] == 1.0 and stats["n"] == 2 and stats["of"] == 3 and stats["per_seed"] == [0.5, None, 1.5]
    assert compare.ratio(1.0, 0.0) == math.inf and compare.ratio(None, 1.0) is None


def test_rows_are_read_in_arrival_order(tmp_path):
    lines = [json.dumps({"trial_id": t, "training_iteration": i}) for t, i in [("b", 1), ("a", 1), ("b", 2)]]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines[:2]) + "\n{half a line\n" + lines[2] + "\n")
    assert [(r["trial_id"], r["training_iteration"]) for r in compare.arrival_rows(tmp_path)] == [
        ("b", 1), ("a", 1), ("b", 2)]


def test_a_round_that_trained_longer_counts_its_round_epochs_against_the_budget():
    rows = [row(0.5, 1.0, trial_id="a"), row(0.6, 1.0, trial_id="b", round_epochs=3), row(0.7, 1.0, trial_id="a")]
    assert compare.trial_epochs(rows, 1) == 5
    assert compare.within_budget(rows, 4, 1) == rows[:2]  # 1 + 3 fits; the third would make 5
    # The cut is a prefix in arrival order: once a round overflows, nothing after it counts.
    assert compare.within_budget(rows, 3, 1) == rows[:1]
    assert compare.trial_epochs(compare.within_budget(rows, 3, 1), 1) == 1


def snapshot(acc, latency, memory=5.0, **extra):
    """An architecture snapshot as a member reports it in its round's ``snapshots`` JSON."""
    return {"round": 1, "epoch": 1, "val_accuracy": acc, "latency_ms": latency, "peak_memory_mb": memory,
            "params": 50, "genome": "{}", "genome_hash": "snap", **extra}


def test_snapshots_of_counted_rows_are_scored_at_no_extra_trial_epochs():
    first = row(0.8, 2.0, trial_id="a", training_iteration=1, timestamp=100,
                snapshots=json.dumps([snapshot(0.9, 1.0)]))
    late = row(0.5, 3.0, trial_id="b", training_iteration=1, timestamp=101,
               snapshots=json.dumps([snapshot(0.99, 0.5)]))  # beyond the budget: neither it nor its snapshot counts
    run = compare.evaluate_run([first, late], start=99.0, budget=1, epochs_per_round=1, reference=REFERENCE)
    # The row alone, (0.2, 2) against (1, 4): 0.8 x 2 = 1.6; its snapshot (0.1, 1) dominates it: 0.9 x 3 = 2.7.
    assert compare.front_hypervolume([first], "latency_ms", REFERENCE) == pytest.approx(1.6)
    assert run["hypervolume_latency"] == pytest.approx(2.7)
    assert run["trial_epochs_counted"] == 1 and run["rows_counted"] == 1 and run["snapshots_counted"] == 1
    assert run["best_val_accuracy"] == 0.9
    assert run["best"]["snapshot"] is True and run["best"]["trial_id"] == "a" and run["best"]["params"] == 50
    assert run["progress"] == [(1.0, 0.8), (1.0, 0.9)]  # the snapshot arrives with its row


def plain_and_variant(hv_latency, hv_memory, acc, params, wall, test_acc, epochs=16, from_snapshot=False):
    return {"hypervolume_latency": hv_latency, "hypervolume_memory": hv_memory, "best_val_accuracy": acc,
            "best": {"params": params, "peak_memory_mb": 8.0, "latency_ms": 2.0, "snapshot": from_snapshot},
            "test_accuracy": test_acc, "wall_seconds": wall, "trial_epochs_counted": epochs,
            "trial_epochs_reported": epochs + 2, "snapshots_counted": 3 if from_snapshot else 0}


def test_each_variant_is_compared_with_plain_spidernet_of_the_same_seed():
    plain = [plain_and_variant(2.0, 4.0, 0.80, 100, 50.0, 0.70), plain_and_variant(4.0, 4.0, 0.90, 200, 40.0, 0.80)]
    variant = [plain_and_variant(3.0, 2.0, 0.85, 50, 100.0, 0.75, epochs=15, from_snapshot=True),
               plain_and_variant(2.0, 6.0, 0.80, 300, 40.0, 0.80)]
    seed_rows = [{"seed": seed, "runs": {"spidernet": p}, "variants": {"gradual_pruning": v},
                  "variant_ratios": {"gradual_pruning": compare.compare_variant(v, p)}}
                 for seed, (p, v) in enumerate(zip(plain, variant))]
    summary = compare.summarise_variants(seed_rows)["gradual_pruning"]
    assert summary["hypervolume_ratio"]["latency"]["per_seed"] == [1.5, 0.5]
    assert summary["hypervolume_ratio"]["latency"]["mean"] == pytest.approx(1.0)
    assert summary["hypervolume_ratio"]["memory"]["per_seed"] == [0.5, 1.5]
    assert summary["val_accuracy_difference"]["per_seed"] == pytest.approx([0.05, -0.10])
    assert summary["params_ratio"]["min"] == 0.5 and summary["params_ratio"]["max"] == 1.5
    assert summary["test_accuracy_difference"]["per_seed"] == pytest.approx([0.05, 0.0])
    assert summary["wall_time_ratio"]["per_seed"] == [2.0, 1.0]
    assert summary["trial_epochs_counted"] == [15, 16] and summary["snapshots_counted"] == [3, 0]
    assert summary["best_is_snapshot"] == [True, False]
    assert compare.summarise_variants([{"seed": 0, "runs": {"spidernet": plain[0]}}]) == {}  # no variants run


def test_a_mutation_that_fell_back_to_a_split_counts_as_drawn_but_not_carried_out():
    rows = [row(0.5, 1.0, mutation=json.dumps({"kind": "crossover", "applied": False, "chosen": [0, 0, 1]})),
            row(0.5, 1.0, mutation=json.dumps({"kind": "crossover", "applied": True, "chosen": None})),
            row(0.5, 1.0, mutation=json.dumps({"kind": "split", "chosen": None})),
            row(0.5, 1.0, mutation="", ops_deleted=2, round_epochs=2, channels_removed=4)]
    activity = compare.extension_activity(rows, epochs_per_round=1)
    assert activity["mutations"] == {"crossover": {"asked": 2, "done": 1}, "split": {"asked": 1, "done": 0}}
    assert activity["ops_deleted"] == 2 and activity["channels_removed"] == 4 and activity["longer_rounds"] == 1
    assert compare.activity_text([activity, activity]) == (
        "crossover 2/4, 4 ops deleted, 8 channels removed, 2 longer rounds")


def test_every_variant_is_spidernet_with_its_own_extension_on_under_its_own_name(tmp_path):
    settings = dict(compare.DATASETS["digits"])
    plain = compare.search_config(settings, "spidernet", 1, tmp_path)
    names = {plain.name}
    for variant, extension in compare.VARIANTS.items():
        config = compare.search_config(settings, variant, 1, tmp_path)
        changed = {k for k in extension if getattr(config, k) != getattr(plain, k)}
        assert config.strategy == "spidernet" and changed == set(extension), variant
        names.add(config.name)
    assert len(names) == 1 + len(compare.VARIANTS)
    # One such arm takes a snapshot within a member's epochs here, else gradual pruning's snapshots never come.
    epochs_of_a_member = settings["rounds"] * settings["epochs_per_round"]
    assert 0 < compare.VARIANTS["gradual_pruning"]["snapshot_stable_epochs"] <= epochs_of_a_member


def test_the_arms_rotate_with_the_seed_and_variants_are_chosen_on_the_command_line():
    arms = compare.arm_order(0, ["crossover"])
    assert arms == ["spidernet", "random", "pbt", "crossover"]
    assert compare.arm_order(1, ["crossover"]) == arms[1:] + arms[:1]
    assert compare.parse_args([]).variants == list(compare.VARIANTS)
    assert compare.parse_args(["--variants"]).variants == []
    assert compare.parse_args(["--variants", "none"]).variants == []
    chosen = ["crossover", "gradual_pruning"]
    assert compare.parse_args(["--variants", *chosen]).variants == chosen


def test_the_report_renders_a_variant_table_only_where_variants_ran():
    report = json.loads((BENCHMARKS / "results" / "compare.json").read_text())
    for block in report["datasets"].values():
        block.pop("variants", None)  # as written before the variants existed
    assert "extensions vs plain SpiderNet" not in compare.markdown(report)
    block = next(iter(report["datasets"].values()))
    run = plain_and_variant(3.0, 2.0, 0.85, 50, 100.0, 0.75)
    seed_row = {"seed": 0, "variants": {"crossover": run},
                "variant_ratios": {"crossover": compare.compare_variant(run, run)}}
    block["variants"] = compare.summarise_variants([seed_row])
    text = compare.markdown(report)
    assert text.count("extensions vs plain SpiderNet") == 1
    assert "| crossover | 1.00 | 1.00 | 0.00 | 1.00 |" in text
