"""The comparison benchmark's own machinery (benchmarks/compare.py), on hand-made rows: hypervolume
against hand-computed areas, the equal-budget cut, time to target and the ratios."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling provenance.py, as when run from there
_spec = importlib.util.spec_from_file_location("compare", BENCHMARKS / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

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
