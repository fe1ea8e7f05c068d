"""Specification of the results writer: rows, the Pareto front, parquet files, plot and summary.

The experiment directory is a hand-made copy of a run's layout: one directory per trial (Ray's),
the launcher's rows.jsonl (every reported row, JSON lines) and the scheduler's scheduler/state.json. Its rows are
chosen so the front is known:

    trial A  r1  h1  acc 0.80  lat  5  mem 50   same architecture as r2, dominated by it
             r2  h1  acc 0.85  lat  4  mem 50   front
             r3  h2  acc 0.90  lat  8  mem 60   front
             r4  h3  acc 0.99  lat 30  mem 60   over the latency budget: front only without budgets
    trial B  r1  h4  acc 0.70  lat  2  mem 40   front (fastest)
             r2  h5  acc 0.00  lat  1  mem 10   diverged: never on the front
             r3  h2  acc 0.88  lat  8.5 mem 60  a clone of A's h2, worse than A's row
             r4  h6  acc 0.75  lat  6  mem 70   dominated by h1
             (r5 truncated mid-write)
    trial C  never reported
"""

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spidernet_ray import results, rundir
from spidernet_ray.results import (
    chance_warning,
    format_front_table,
    hypervolume_of,
    pareto_front,
    read_genealogy,
    read_rows,
    write_results,
)
from spidernet_ray.rundir import atomic_write

OBJECTIVES = ("max:val_accuracy", "min:latency_ms", "min:peak_memory_mb")
BUDGETS = {"latency_ms": 10.0, "peak_memory_mb": 100.0}
TRIAL_A, TRIAL_B, TRIAL_C = "aaaaa_00000", "aaaaa_00001", "aaaaa_00002"
MUTATION = {"id": "abc123def456", "kind": "split", "donor": TRIAL_A}


def genome_json(genome_hash):
    return json.dumps({"version": 1, "channels": 8, "reductions": 2, "tag": genome_hash}, sort_keys=True)


def row(trial_id, iteration, genome_hash, accuracy, latency, memory, **overrides):
    """One line of Ray's result.json as the trainable reports it."""
    reported = {
        "val_accuracy": accuracy, "val_loss": 0.5, "train_loss": 0.6, "train_seconds": 1.5,
        "latency_ms": latency, "latency_spread_ms": 0.1, "peak_memory_mb": memory,
        "memory_method": "cpu_estimate", "params": 10_000 + 100 * iteration, "flops": 2_500_000,
        "batch_size": 64, "latency_batch_size": 1, "device": "cpu",
        "ops_alive": 7 + iteration, "ops_open": 6, "ops_deleted": 1,
        "genome": genome_json(genome_hash), "supernet_genome": genome_json(genome_hash + "s"),
        "genome_hash": genome_hash, "budget_violation": 0.0, "feasible": True, "fitness": accuracy,
        "diverged": False, "reason": "", "lr": 0.05, "weight_decay": 3e-4, "drop_path": 0.0,
        "mutation": "", "parent_trial": "", "split_applied": False, "split_refused_budget": 0,
        # Ray's own keys
        "timestamp": 1_700_000_000 + iteration, "checkpoint_dir_name": f"checkpoint_{iteration - 1:06d}",
        "done": False, "training_iteration": iteration, "trial_id": trial_id,
        "date": "2025-01-01_12-00-00", "time_this_iter_s": 2.0, "time_total_s": 2.0 * iteration,
        "pid": 1234, "hostname": "node", "node_ip": "127.0.0.1",
        "config": {"lr": 0.05, "weight_decay": 3e-4, "drop_path": 0.0, "seed": 7,
                   "settings": {"epochs_per_round": 1}, "mutation": None},
        "time_since_restore": 2.0 * iteration, "iterations_since_restore": iteration,
    }
    reported.update(overrides)
    return reported


def trial_a_rows():
    return [
        row(TRIAL_A, 1, "h1", 0.80, 5.0, 50.0),
        row(TRIAL_A, 2, "h1", 0.85, 4.0, 50.0),
        row(TRIAL_A, 3, "h2", 0.90, 8.0, 60.0),
        row(TRIAL_A, 4, "h3", 0.99, 30.0, 60.0, budget_violation=2.0, feasible=False, split_refused_budget=2),
    ]


def trial_b_rows():
    return [
        row(TRIAL_B, 1, "h4", 0.70, 2.0, 40.0),
        row(TRIAL_B, 2, "h5", 0.0, 1.0, 10.0, diverged=True, feasible=False, val_loss=math.inf,
            train_loss=math.nan, reason="training loss became nan in round 2, epoch 1"),
        row(TRIAL_B, 3, "h2", 0.88, 8.5, 60.0, mutation=json.dumps({"id": MUTATION["id"], "chosen": [0, 1]}),
            parent_trial=TRIAL_A, split_applied=True, split_refused_budget=1),
        row(TRIAL_B, 4, "h6", 0.75, 6.0, 70.0),
    ]


def write_trial(experiment_dir, name, rows, tail=""):
    directory = experiment_dir / name
    directory.mkdir()
    (directory / "params.json").write_text(json.dumps({"lr": 0.05}))
    lines = "".join(json.dumps(r) + "\n" for r in rows)  # json writes NaN/Infinity tokens, like Ray
    with (experiment_dir / "rows.jsonl").open("a") as f:
        f.write(lines + tail)
    return directory


def make_experiment(root, with_state=True):
    experiment_dir = root / "my-search"
    experiment_dir.mkdir()
    # Listed out of order on purpose: rows come back sorted by (trial_id, training_iteration).
    write_trial(experiment_dir, f"SpiderNetTrainable_{TRIAL_A}_0_lr=0.05", trial_a_rows()[::-1])
    truncated = json.dumps(row(TRIAL_B, 5, "h7", 0.95, 1.0, 1.0))[:80]
    write_trial(experiment_dir, f"SpiderNetTrainable_{TRIAL_B}_1_lr=0.05", trial_b_rows(), tail=truncated)
    write_trial(experiment_dir, f"SpiderNetTrainable_{TRIAL_C}_2_lr=0.05", [])
    (experiment_dir / "experiment_state-2025-01-01_12-00-00.json").write_text("{}")
    if with_state:
        state = {
            "genealogy": [{
                "time": 1_700_000_100.5, "round": 2, "child": TRIAL_B, "donor": TRIAL_A,
                "donor_genome_hash": "h1", "mutation": MUTATION, "lr": 0.04, "weight_decay": 2e-4,
                "drop_path": 0.0,
            }],
            "archive": {"objectives": list(OBJECTIVES), "entries": []},
            "scores": {},
        }
        (experiment_dir / rundir.STATE_FILE).parent.mkdir()
        (experiment_dir / rundir.STATE_FILE).write_text(json.dumps(state))
    return experiment_dir


@pytest.fixture
def experiment_dir(tmp_path):
    return make_experiment(tmp_path)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One run written once (plotting costs a second): (experiment_dir, summary)."""
    experiment_dir = make_experiment(tmp_path_factory.mktemp("written"))
    return experiment_dir, write_results(experiment_dir, OBJECTIVES, BUDGETS)


def hashes(front):
    return [entry["genome_hash"] for entry in front]


# Reading Ray's files


def test_read_rows_returns_every_decodable_row_sorted_by_trial_and_round(experiment_dir):
    rows = read_rows(experiment_dir)
    assert [(r["trial_id"], r["training_iteration"]) for r in rows] == [
        (TRIAL_A, 1), (TRIAL_A, 2), (TRIAL_A, 3), (TRIAL_A, 4),
        (TRIAL_B, 1), (TRIAL_B, 2), (TRIAL_B, 3), (TRIAL_B, 4),
    ]


def test_read_rows_keeps_config_scalars_and_drops_nested_config(experiment_dir):
    first = read_rows(experiment_dir)[0]
    assert "config" not in first
    assert (first["config_lr"], first["config_weight_decay"], first["config_drop_path"], first["config_seed"]) == (
        0.05, 3e-4, 0.0, 7)
    assert first["trial_dir"] == f"SpiderNetTrainable_{TRIAL_A}_0_lr=0.05"


def test_read_rows_reads_nan_and_infinity_tokens(experiment_dir):
    diverged = read_rows(experiment_dir)[5]
    assert math.isnan(diverged["train_loss"]) and diverged["val_loss"] == math.inf


def test_read_rows_of_a_run_without_rows_is_empty(tmp_path):
    assert read_rows(tmp_path) == []


def test_a_redone_round_and_a_clone_are_marked_in_the_order_reported():
    clone = {"mutation": json.dumps({"id": "m1", "donor": TRIAL_A}), "parent_trial": TRIAL_A}
    rows = [row(TRIAL_B, i, "h", 0.5, 1.0, 1.0) for i in (1, 2, 3, 2, 3, 4)]  # back to round 1's checkpoint
    rows += [row(TRIAL_B, 6, "h", 0.5, 1.0, 1.0, **clone),  # cloned from A at A's round 5
             row(TRIAL_B, 6, "h", 0.5, 1.0, 1.0, **clone),  # restarted before it checkpointed: cloned again
             row(TRIAL_B, 7, "h", 0.5, 1.0, 1.0)]
    results.mark_history(rows)
    assert [(r["training_iteration"], r["redone"], r["cloned_from"]) for r in rows] == [
        (1, False, ""), (2, False, ""), (3, False, ""), (2, True, ""), (3, True, ""), (4, False, ""),
        (6, False, TRIAL_A), (6, True, TRIAL_A), (7, False, "")]


def test_trials_parquet_says_which_rows_are_redone_or_clones(written):
    experiment_dir, _ = written
    trials = pq.read_table(experiment_dir / "trials.parquet").to_pylist()
    marks = [(r["training_iteration"], r["redone"], r["cloned_from"]) for r in trials if r["trial_id"] == TRIAL_B]
    assert marks == [(1, False, ""), (2, False, ""), (3, False, TRIAL_A), (4, False, "")]


def test_the_state_of_a_run_from_before_it_moved_is_still_read(experiment_dir):
    (experiment_dir / rundir.STATE_FILE).rename(experiment_dir / rundir.LEGACY_STATE_FILE)
    assert [entry["mutation_id"] for entry in read_genealogy(experiment_dir)] == [MUTATION["id"]]


# The front


def test_front_holds_exactly_the_nondominated_feasible_architectures_best_accuracy_first(experiment_dir):
    front = pareto_front(read_rows(experiment_dir), OBJECTIVES, BUDGETS)
    assert hashes(front) == ["h2", "h1", "h4"]


def test_row_over_budget_joins_the_front_only_without_budgets(experiment_dir):
    front = pareto_front(read_rows(experiment_dir), OBJECTIVES)
    assert hashes(front) == ["h3", "h2", "h1", "h4"]


def test_diverged_row_is_never_on_the_front(experiment_dir):
    # h5 is the cheapest row by far; only its divergence keeps it off.
    assert "h5" not in hashes(pareto_front(read_rows(experiment_dir), OBJECTIVES))


def test_architecture_seen_twice_is_represented_by_its_best_row(experiment_dir):
    front = {entry["genome_hash"]: entry for entry in pareto_front(read_rows(experiment_dir), OBJECTIVES, BUDGETS)}
    assert (front["h1"]["trial_id"], front["h1"]["training_iteration"], front["h1"]["val_accuracy"]) == (
        TRIAL_A, 2, 0.85)
    assert (front["h2"]["trial_id"], front["h2"]["training_iteration"]) == (TRIAL_A, 3)


def test_front_entries_keep_identity_metrics_size_and_genome(experiment_dir):
    entry = pareto_front(read_rows(experiment_dir), OBJECTIVES, BUDGETS)[0]
    assert entry == {
        "trial_id": TRIAL_A, "trial_dir": f"SpiderNetTrainable_{TRIAL_A}_0_lr=0.05", "training_iteration": 3,
        "val_accuracy": 0.90, "latency_ms": 8.0, "peak_memory_mb": 60.0, "params": 10_300, "flops": 2_500_000,
        "ops_alive": 10, "estimated": None, "genome_hash": "h2", "genome": genome_json("h2"),
    }


def test_row_missing_an_objective_metric_is_not_on_the_front():
    rows = [row("t", 1, "h1", 0.9, math.nan, 50.0), row("t", 2, "h2", 0.5, 5.0, 50.0)]
    assert hashes(pareto_front(rows, OBJECTIVES)) == ["h2"]


# Files


def test_trials_parquet_holds_every_row_with_typed_columns(written):
    experiment_dir, summary = written
    table = pq.read_table(experiment_dir / "trials.parquet")
    assert table.num_rows == summary.n_rows == 8
    assert table.column_names[:3] == ["trial_id", "trial_dir", "training_iteration"]
    assert "config" not in table.column_names
    expected = {
        "training_iteration": pa.int64(), "val_accuracy": pa.float64(), "latency_ms": pa.float64(),
        "peak_memory_mb": pa.float64(), "params": pa.int64(), "flops": pa.int64(), "ops_alive": pa.int64(),
        "feasible": pa.bool_(), "diverged": pa.bool_(), "genome": pa.string(), "genome_hash": pa.string(),
        "mutation": pa.string(), "config_lr": pa.float64(), "config_seed": pa.int64(), "timestamp": pa.int64(),
    }
    assert {name: table.schema.field(name).type for name in expected} == expected
    assert table.column("mutation").to_pylist()[6] == json.dumps({"id": MUTATION["id"], "chosen": [0, 1]})


def test_pareto_parquet_holds_the_front_with_its_genomes(written):
    experiment_dir, summary = written
    table = pq.read_table(experiment_dir / "pareto.parquet")
    assert table.column("genome_hash").to_pylist() == hashes(summary.front) == ["h2", "h1", "h4"]
    assert [json.loads(g)["tag"] for g in table.column("genome").to_pylist()] == ["h2", "h1", "h4"]


def test_genealogy_parquet_reads_back_the_exploits_with_the_mutation_flattened(written):
    experiment_dir, _ = written
    entries = pq.read_table(experiment_dir / "genealogy.parquet").to_pylist()
    assert entries == [{
        "time": 1_700_000_100.5, "round": 2, "child": TRIAL_B, "donor": TRIAL_A, "donor_genome_hash": "h1",
        "mutation_id": MUTATION["id"], "mutation_kind": "split", "lr": 0.04, "weight_decay": 2e-4,
        "drop_path": 0.0, "undone": False,
    }]


def test_genealogy_parquet_is_empty_but_typed_without_scheduler_state(tmp_path):
    experiment_dir = make_experiment(tmp_path, with_state=False)
    assert read_genealogy(experiment_dir) == []
    write_results(experiment_dir, OBJECTIVES, BUDGETS)
    table = pq.read_table(experiment_dir / "genealogy.parquet")
    assert table.num_rows == 0
    assert table.schema.field("mutation_kind").type == pa.string()
    assert table.schema.field("round").type == pa.int64()


def test_plot_is_a_nontrivial_png(written):
    experiment_dir, summary = written
    data = (experiment_dir / "pareto.png").read_bytes()
    assert summary.paths["plot"] == experiment_dir / "pareto.png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000


def test_summary_counts_names_the_best_member_and_holds_the_table(written):
    experiment_dir, summary = written
    text = (experiment_dir / "summary.md").read_text()
    assert text.startswith("# Search results: my-search")
    assert "- trials: 3 (2 reported, 1 never reported" in text
    assert "- rounds: 4" in text and "- rows: 8" in text
    assert "- exploits: 1" in text and "refused splits (over budget): 3" in text
    assert f"Trial `{TRIAL_A}`, round 3: val acc 90.00 %" in text
    assert summary.table_markdown in text
    assert (summary.best["genome_hash"], summary.n_exploits, summary.n_refused_splits) == ("h2", 1, 3)


def test_writes_leave_only_the_result_files_beside_rays(written):
    experiment_dir, summary = written
    ours = {path.name for path in summary.paths.values()}
    assert ours == {"trials.parquet", "pareto.parquet", "genealogy.parquet", "pareto.png", "summary.md"}
    assert not list(experiment_dir.glob("*.tmp"))


def test_a_failed_write_keeps_the_previous_file_whole(tmp_path):
    target = tmp_path / "summary.md"
    target.write_text("previous")

    def crash_midway(tmp):
        tmp.write_text("half")
        raise RuntimeError("driver died")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash_midway)
    assert target.read_text() == "previous"
    assert [path.name for path in tmp_path.iterdir()] == ["summary.md"]


def test_run_where_no_trial_reported_still_writes_every_file(tmp_path):
    experiment_dir = tmp_path / "empty-run"
    experiment_dir.mkdir()
    write_trial(experiment_dir, f"SpiderNetTrainable_{TRIAL_C}_0", [])
    summary = write_results(experiment_dir, OBJECTIVES, BUDGETS)
    assert (summary.n_rows, summary.front, summary.best) == (0, [], None)
    table = pq.read_table(summary.paths["trials"])
    assert table.num_rows == 0 and table.schema.field("val_accuracy").type == pa.float64()
    assert "No feasible, non-diverged architecture" in summary.paths["summary"].read_text()


# Table and hypervolume


def test_front_table_has_one_line_per_member_under_the_fixed_header():
    entry = row(TRIAL_A, 3, "0123456789abcdef", 0.9, 8.125, 60.0, params=123_456, flops=45_600_000, ops_alive=12)
    lines = format_front_table([entry]).splitlines()
    assert lines[0] == ("| rank | trial | round | val acc (%) | latency (ms) | peak mem (MB) | params | FLOPs | ops "
                        "| genome hash |")
    assert lines[2] == f"| 1 | {TRIAL_A} | 3 | 90.00 | 8.125 | 60.0 | 123,456 | 45.60 M | 12 | `0123456789abcdef` |"
    assert len(lines) == 3


def test_front_table_of_an_empty_front_says_so():
    assert "empty Pareto front" in format_front_table([])


def test_hypervolume_of_the_front_matches_the_hand_computed_area(experiment_dir):
    # (val error, latency) points (0.10, 8), (0.15, 4), (0.30, 2) against the reference (1.0, 10):
    # 0.90 * 2 + 0.85 * (8 - 4) + 0.70 * (4 - 2) = 1.8 + 3.4 + 1.4 = 6.6 error x ms.
    rows = read_rows(experiment_dir)
    front = pareto_front(rows, OBJECTIVES, BUDGETS)
    assert hypervolume_of(front, reference=(1.0, 10.0)) == pytest.approx(6.6)
    # Dominated, diverged and over-budget rows add nothing.
    assert hypervolume_of(rows, reference=(1.0, 10.0), budgets=BUDGETS) == pytest.approx(6.6)


# -- chance level -----------------------------------------------------------------------------------
def test_a_best_accuracy_near_chance_is_warned_of_with_its_likely_cause_and_a_clear_one_is_not():
    warning = chance_warning(0.11, 10)
    assert "chance (10.0% for 10 classes)" in warning and "too few steps" in warning
    assert chance_warning(0.40, 10) is None
    assert chance_warning(0.53, 2) is not None and chance_warning(0.70, 2) is None
    assert chance_warning(None, 10) is None and chance_warning(0.1, None) is None


def test_a_chance_level_search_says_so_in_its_summary_and_a_learning_one_does_not(tmp_path):
    experiment_dir = tmp_path / "ten-classes"
    experiment_dir.mkdir()
    ten_classes = json.dumps({"num_classes": 10, "tag": "x"})
    rows = [row(TRIAL_A, 1, "h1", 0.10, 5.0, 50.0, genome=ten_classes),
            row(TRIAL_A, 2, "h2", 0.11, 4.0, 51.0, genome=ten_classes)]
    write_trial(experiment_dir, f"SpiderNetTrainable_{TRIAL_A}_0", rows)
    summary = write_results(experiment_dir, OBJECTIVES)
    assert summary.warning and summary.warning in (experiment_dir / "summary.md").read_text()

    (experiment_dir / "rows.jsonl").write_text("".join(
        json.dumps(dict(r, val_accuracy=0.9)) + "\n" for r in rows))
    assert write_results(experiment_dir, OBJECTIVES).warning is None
    assert "of chance" not in (experiment_dir / "summary.md").read_text()


def test_the_round_line_flags_a_near_chance_population(capsys):
    from spidernet_ray.config import SearchConfig
    from spidernet_ray.progress import RoundProgress

    progress = RoundProgress(SearchConfig(population=1, rounds=2))
    progress.add(TRIAL_A, row(TRIAL_A, 1, "h1", 0.12, 5.0, 50.0, genome=json.dumps({"num_classes": 10})))
    progress.add(TRIAL_A, row(TRIAL_A, 2, "h1", 0.80, 5.0, 50.0))
    first, second = capsys.readouterr().out.splitlines()
    assert "near chance: 10 classes" in first and "chance" not in second


def test_front_members_on_the_same_spot_share_one_rank_label():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = [{"val_accuracy": 0.9, "latency_ms": 2.0}, {"val_accuracy": 0.5, "latency_ms": 1.0},
             {"val_accuracy": 0.9, "latency_ms": 2.001}]
    figure, axis = plt.subplots()
    results._rank_labels(axis, front, "latency_ms", log=False)
    assert sorted(text.get_text() for text in axis.texts) == ["1,3", "2"]
    plt.close(figure)
