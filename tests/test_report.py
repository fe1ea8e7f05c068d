"""The run report: every figure is drawn and non-empty, report.md links them, the numbers behind the
figures (lineage, per-round progress) are right. Runs on a hand-made run directory of real genomes."""

import json

import pyarrow.parquet as pq
import pytest

from spidernet_ray import report as report_cli
from spidernet_ray import reporting as report
from spidernet_ray.genome import initial_genome
from spidernet_ray.results import GENEALOGY_TYPES, pareto_front, to_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OBJECTIVES = ("max:val_accuracy", "min:latency_ms", "min:peak_memory_mb")


def make_run_dir(path, dataset="synthetic", rounds=3):
    """A run directory as launch writes it: 3 trials x ``rounds`` rounds of real genomes, trial b
    cloned from trial a after round 1 with a split (as the scheduler records it), a and b on the front."""
    base = initial_genome((1, 8, 8), 10, reductions=1, channels=4)
    base = base.remove_op(0, 0, 2, "sep_conv_5x5").remove_op(1, 0, 3, "dil_conv_5x5")
    grown = base.split_edge(0, 2, 1, ops=("sep_conv_3x3", "identity"))
    slim = base.remove_op(1, 3, 2, "sep_conv_5x5").remove_op(1, 3, 2, "sep_conv_3x3")
    mutation = {"id": "m1", "donor": "t_a", "chosen": [0, 2, 1], "refused_for_budget": 0}
    plan = {  # trial -> per round (val accuracy, latency ms, genome, mutation)
        "t_a": [(0.30, 2.0, base, ""), (0.50, 2.1, base, ""), (0.60, 2.0, base, "")],
        "t_b": [(0.20, 3.0, slim, ""), (0.70, 2.6, grown, json.dumps(mutation)), (0.85, 2.5, grown, "")],
        "t_c": [(0.10, 1.0, slim, ""), (0.25, 1.1, slim, ""), (0.40, 1.2, slim, "")],
    }
    rows = []
    for trial, rounds_ in plan.items():
        for k, (acc, latency, genome, mut) in enumerate(rounds_[:rounds], start=1):
            rows.append({
                "trial_id": trial, "trial_dir": f"T_{trial}", "training_iteration": k, "val_accuracy": acc,
                "latency_ms": latency, "peak_memory_mb": 5.0 + genome.ops_alive() / 10,
                "params": 1000 + 50 * genome.ops_alive(),
                "flops": 10_000, "ops_alive": genome.ops_alive(), "genome": genome.to_json(),
                "genome_hash": genome.hash, "diverged": False, "feasible": True, "mutation": mut,
                "parent_trial": "t_a" if mut else "", "split_applied": bool(mut),
            })
    genealogy = [{"time": 1.0, "round": 1, "child": "t_b", "donor": "t_a", "donor_genome_hash": base.hash,
                  "mutation_id": "m1", "mutation_kind": "split", "lr": 0.05, "weight_decay": 3e-4, "drop_path": 0.0}]
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(rows), path / "trials.parquet")
    pq.write_table(to_table(pareto_front(rows, OBJECTIVES)), path / "pareto.parquet")
    pq.write_table(to_table(genealogy, tuple(GENEALOGY_TYPES)), path / "genealogy.parquet")
    config = {"dataset": dataset, "data_root": None, "subset": None, "val_fraction": 0.1, "seed": 0,
              "population": 3, "rounds": rounds, "epochs_per_round": 1, "reductions": 1, "channels": 4,
              "batch_size": 32, "objectives": list(OBJECTIVES), "latency_budget_ms": None,
              "memory_budget_mb": None, "latency_batch_size": 1, "name": path.name}
    (path / "search_config.json").write_text(json.dumps(config))
    return path


def retrained_row(run_dir, genome_json, genome_hash, test_accuracy):
    return {"genome_hash": genome_hash, "source_trial": "t_b", "source_round": 3, "search_val_accuracy": 0.85,
            "test_accuracy": test_accuracy, "val_accuracy": test_accuracy + 0.01, "params": 4000, "latency_ms": 2.2,
            "peak_memory_mb": 6.0, "train_seconds": 12.0, "seconds_per_epoch": 6.0, "epochs": 2, "lr": 0.05,
            "momentum": 0.9, "weight_decay": 3e-4, "batch_size": 32, "train_examples": 900, "test_examples": 250,
            "device": "cpu", "error": "", "genome": genome_json}


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    run_dir = make_run_dir(tmp_path_factory.mktemp("run") / "tiny")
    return run_dir, report.write_report(run_dir)


def _figures(markdown):
    return [line.split("](", 1)[1].rstrip(")") for line in markdown.splitlines() if line.startswith("![")]


def test_report_md_links_every_figure_and_every_figure_is_a_nonempty_png(reported):
    run_dir, path = reported
    assert path == run_dir / "report.md"
    links = _figures(path.read_text())
    names = {link.split("/")[-1] for link in links}
    assert {"front.png", "progress.png", "lineage.png"} <= names
    assert sum(name.startswith("arch_") for name in names) == len(pq.read_table(run_dir / "pareto.parquet"))
    for link in links:
        figure = run_dir / link
        assert figure.read_bytes()[:8] == PNG_MAGIC, link
        assert figure.stat().st_size > 10_000, link  # a drawn figure, not an empty canvas


def test_report_states_the_hypervolume_reference_and_one_line_per_round(reported):
    _, path = reported
    text = path.read_text()
    assert "val error 1, latency 20 ms" in text
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and
            line.count("|") == 7 and line.split("|")[1].strip().isdigit()] == ["1", "2", "3"]


def test_without_retraining_the_report_says_how_to_retrain(reported):
    _, path = reported
    assert "Nothing retrained yet" in path.read_text()


def test_a_clone_continues_the_donor_round_it_was_taken_at():
    rows = [{"trial_id": "a", "training_iteration": 1}, {"trial_id": "a", "training_iteration": 2},
            {"trial_id": "b", "training_iteration": 1},
            {"trial_id": "b", "training_iteration": 2,
             "mutation": json.dumps({"id": "m", "donor": "a", "chosen": [1, 0, 2]})},
            {"trial_id": "b", "training_iteration": 3}]
    lineage = report.build_lineage(rows, [{"mutation_id": "m", "round": 1}])
    assert lineage.parent[("b", 2)] == ("a", 1)
    assert lineage.clone_label[("b", 2)] == "split c1 0->2"
    assert lineage.parent[("b", 3)] == ("b", 2)
    assert lineage.ancestors(("b", 3)) == [("b", 3), ("b", 2), ("a", 1)]


def test_lineage_text_traces_the_best_member_back_through_its_clone(reported):
    _, path = reported
    assert "t_a r1 =[split c0 2->1]=> t_b r2 -> t_b r3" in path.read_text()


def test_hypervolume_never_falls_and_best_so_far_is_the_running_maximum(tmp_path):
    data = report.read_run(make_run_dir(tmp_path / "run"))
    stats = report.progress_by_round(data, report.hv_reference(data))
    assert [s.round for s in stats] == [1, 2, 3]
    assert all(a.hypervolume <= b.hypervolume for a, b in zip(stats, stats[1:]))
    assert [round(s.best_so_far, 2) for s in stats] == [0.30, 0.70, 0.85]


def test_reference_latency_grows_past_the_slowest_row_unless_given(tmp_path):
    data = report.read_run(make_run_dir(tmp_path / "run"))
    assert report.hv_reference(data) == (1.0, 20.0)
    assert report.hv_reference(data, 5.0) == (1.0, 5.0)
    data.rows[0]["latency_ms"] = 31.0
    assert report.hv_reference(data) == (1.0, 50.0)


def test_retrained_rows_add_their_table_and_figure(tmp_path):
    from spidernet_ray.retrain import write_retrain_table

    run_dir = make_run_dir(tmp_path / "run")
    front = pq.read_table(run_dir / "pareto.parquet").to_pylist()
    write_retrain_table(run_dir, [retrained_row(run_dir, front[0]["genome"], front[0]["genome_hash"], 0.9)])
    text = report.write_report(run_dir).read_text()
    assert "## Retrained from scratch" in text and "90.00" in text
    assert "report/retrain.png" in _figures(text)
    assert (run_dir / "report" / "retrain.png").read_bytes()[:8] == PNG_MAGIC


def test_command_line_writes_the_report_or_fails_in_one_line(tmp_path, capsys):
    assert report_cli.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    run_dir = make_run_dir(tmp_path / "run", rounds=2)
    assert report_cli.main([str(run_dir), "--hv-latency-ms", "10"]) == 0
    assert "latency 10 ms" in (run_dir / "report.md").read_text()


def test_every_genealogy_entry_is_one_lineage_arrow_with_the_genealogys_own_label():
    # Three clones; the rows show only the first (t_c was cloned again before its row carried the
    # mutation, and t_a's round-3 row says nothing of its clone at all).
    rows = [{"trial_id": t, "training_iteration": k, "val_accuracy": 0.5} for t in ("t_a", "t_b", "t_c")
            for k in (1, 2, 3)]
    rows[4]["mutation"] = json.dumps({"id": "m1", "donor": "t_a", "chosen": [0, 2, 1]})  # t_b round 2
    genealogy = [
        {"time": 1.0, "round": 1, "child": "t_b", "donor": "t_a", "mutation_id": "m1", "mutation_kind": "split"},
        {"time": 2.0, "round": 1, "child": "t_c", "donor": "t_b", "mutation_id": "m2", "mutation_kind": "swap"},
        {"time": 3.0, "round": 2, "child": "t_a", "donor": "t_c", "mutation_id": "m3", "mutation_kind": "drop_op"},
    ]
    clones = [(p, c, label) for p, c, label in report.lineage_arrows(report.build_lineage(rows, genealogy))
              if label is not None]
    assert clones == [(("t_a", 1), ("t_b", 2), "split c0 2->1"), (("t_b", 1), ("t_c", 2), "swap"),
                      (("t_c", 2), ("t_a", 3), "drop op")]


def test_the_report_sets_the_fronts_estimates_against_their_measurement(tmp_path):
    from spidernet_ray.results import front_check
    from spidernet_ray.rundir import FRONT_CHECK_FILE, atomic_write_text

    run_dir = make_run_dir(tmp_path / "tiny")
    estimated = [{"genome_hash": "aaaa", "latency_ms": 2.0, "peak_memory_mb": 5.0},
                 {"genome_hash": "bbbb", "latency_ms": 3.0, "peak_memory_mb": 6.0}]
    measured = [{"latency_ms": 2.2, "latency_spread_ms": 0.1, "peak_memory_mb": 5.5, "memory_method": "cpu_profiler"},
                {"latency_ms": 3.6, "latency_spread_ms": 0.1, "peak_memory_mb": 6.0, "memory_method": "cpu_profiler"}]
    (run_dir / FRONT_CHECK_FILE).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / FRONT_CHECK_FILE, json.dumps(front_check(estimated, measured, device="cpu", threads=1)))
    text = report.write_report(run_dir).read_text()
    assert "Estimated against measured (2 front architectures" in text
    assert "| `bbbb` | 3.000 | 3.600 | 6.0 | 6.0 |" in text
    assert "latency: Kendall tau +1.00, relative error median 12.9%, largest 16.7%" in text  # 2/2.2, 3/3.6
