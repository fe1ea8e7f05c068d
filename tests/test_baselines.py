"""The two baselines of the comparison: random search over the space and stock PBT on a fixed network,
each a strategy of the launcher writing the search's own result files."""

import dataclasses
import json

import pyarrow.parquet as pq
import pytest

from spidernet_ray.baselines import MAX_EXTRA_SPLITS, handwritten_genome, max_random_splits, random_start
from spidernet_ray.config import SearchConfig
from spidernet_ray.data import load_dataset
from spidernet_ray.genome import Genome
from spidernet_ray.strategies import build_strategy

from helpers import launch_into_temp

TINY = ["--dataset", "synthetic", "--population", "3", "--rounds", "3", "--epochs-per-round", "1", "--channels", "4",
        "--reductions", "1", "--batch-size", "32", "--seed", "1"]


def internal_nodes(genome: Genome) -> int:
    return sum(len(cell.nodes) for cell in genome.cells)


def test_random_members_start_from_every_size_the_search_can_reach():
    splits = load_dataset("synthetic", seed=0)
    settings = SearchConfig(reductions=1, channels=4, rounds=4, initial_splits=2)
    assert max_random_splits(settings) == 2 + 4 - 1
    start_nodes = settings.reductions + 1  # the initial genome: one internal node per cell; a split adds one
    sizes = {internal_nodes(random_start(splits, settings, seed)) - start_nodes for seed in range(60)}
    assert sizes == set(range(0, max_random_splits(settings) + 1))
    assert random_start(splits, settings, 7) == random_start(splits, settings, 7)  # a member's seed decides
    # Under a time budget rounds are set high; the draw stays within what a search lineage grows in practice.
    endless = SearchConfig(reductions=1, channels=4, rounds=10_000, initial_splits=2)
    assert max_random_splits(endless) == 2 + MAX_EXTRA_SPLITS


def test_random_members_have_sparse_single_op_and_narrowed_edges_as_pruned_search_members_do():
    splits = load_dataset("synthetic", seed=0)
    settings = SearchConfig(reductions=1, channels=4, channel_search=True)
    edges = [(k, e) for seed in range(20) for k, cell in enumerate(random_start(splits, settings, seed).cells)
             for e in cell.edges]
    sizes = {len(e.ops) for _, e in edges}
    assert 1 in sizes and len(sizes) >= 5 and 0 not in sizes  # one op, several, never none
    narrowed = [(k, width) for k, e in edges for _, width in e.widths]
    assert narrowed and all(1 <= width < 4 * 2**k for k, width in narrowed)  # below the cell's channels
    without = SearchConfig(reductions=1, channels=4, channel_search=False)
    assert not any(random_start(splits, without, seed).has_widths() for seed in range(20))


@pytest.fixture(scope="module")
def random_run(ray_local, tmp_path_factory):
    return launch_into_temp(tmp_path_factory, "random", TINY + ["--strategy", "random"])


def test_random_search_trains_every_member_for_the_full_budget_without_cloning(random_run):
    code, path = random_run
    assert code == 0
    rows = pq.read_table(path / "trials.parquet").to_pylist()
    by_trial = {}
    for row in rows:
        by_trial.setdefault(row["trial_id"], []).append(row["training_iteration"])
    assert sorted(by_trial) and all(sorted(rounds) == [1, 2, 3] for rounds in by_trial.values())
    assert len(by_trial) == 3
    assert not any(row.get("mutation") for row in rows)
    assert pq.read_table(path / "genealogy.parquet").num_rows == 0
    for name in ["pareto.parquet", "pareto.png", "summary.md"]:
        assert (path / name).is_file()


def test_random_members_differ_in_architecture(random_run):
    _, path = random_run
    rows = pq.read_table(path / "trials.parquet").to_pylist()
    first_round = [r for r in rows if r["training_iteration"] == 1]
    starts = {Genome.from_json(r["supernet_genome"]).hash for r in first_round}
    assert len(starts) == 3


@pytest.fixture(scope="module")
def random_asha_run(ray_local, tmp_path_factory):
    return launch_into_temp(tmp_path_factory, "random_asha", TINY + ["--strategy", "random_asha", "--rounds", "2"])


def test_random_search_with_asha_stops_weak_members_early_and_samples_new_ones(random_asha_run):
    code, path = random_asha_run
    assert code == 0
    rounds = {}
    for row in pq.read_table(path / "trials.parquet").to_pylist():
        rounds[row["trial_id"]] = max(rounds.get(row["trial_id"], 0), row["training_iteration"])
    # Without a time budget: population x rounds members, a population at a time; ASHA stops some at a rung.
    assert len(rounds) == 3 * 2
    assert min(rounds.values()) < max(rounds.values()) == 2
    assert not any(row.get("mutation") for row in pq.read_table(path / "trials.parquet").to_pylist())


def test_random_search_keeps_sampling_until_a_time_budget_ends_it(tmp_path):
    def samples(**fields):
        return build_strategy(SearchConfig(population=4, rounds=5, **fields), tmp_path).samples or 4

    assert samples(strategy="random_asha", time_budget_s=30) == samples(strategy="random", time_budget_s=30) > 10**4
    assert samples(strategy="random_asha") == 4 * 5 and samples(strategy="random") == 4
    assert samples(strategy="spidernet", time_budget_s=30) == samples(strategy="pbt", time_budget_s=30) == 4


@pytest.fixture(scope="module")
def pbt_run(ray_local, tmp_path_factory):
    return launch_into_temp(tmp_path_factory, "pbt", TINY + ["--strategy", "pbt"])


def test_stock_pbt_trains_the_handwritten_network_and_reports_the_search_metrics(pbt_run):
    code, path = pbt_run
    assert code == 0
    rows = pq.read_table(path / "trials.parquet").to_pylist()
    assert len({r["trial_id"] for r in rows}) == 3
    splits = load_dataset("synthetic", seed=1)
    settings = SearchConfig(reductions=1, channels=4, rounds=3, epochs_per_round=1,
                                                      batch_size=32)
    fixed = handwritten_genome(splits, settings)
    for row in rows:
        assert 0 <= row["val_accuracy"] <= 1
        assert row["latency_ms"] > 0 and row["peak_memory_mb"] > 0 and row["flops"] > 0
        assert row["feasible"] is True and row["diverged"] is False
        assert Genome.from_json(row["genome"]) == fixed and row["genome_hash"] == fixed.hash
    assert len({r["params"] for r in rows}) == 1
    front = pq.read_table(path / "pareto.parquet").to_pylist()
    assert len(front) == 1 and front[0]["genome_hash"] == fixed.hash  # one architecture, one front entry
    assert json.loads((path / "search_config.json").read_text())["strategy"] == "pbt"


def test_the_handwritten_network_is_as_large_as_a_search_member_at_the_start():
    from spidernet_ray.hardware import count_params
    from spidernet_ray.supernet import DiscreteNet
    from spidernet_ray.trainable import seeded_start

    splits = load_dataset("digits", seed=0)
    settings = SearchConfig(channels=8, reductions=2)
    fixed = handwritten_genome(splits, settings)
    # Sized against the start with every candidate op, whatever share of them a member starts with.
    start = count_params(DiscreteNet(seeded_start(splits, dataclasses.replace(settings, start_ops=0), seed=0)))
    assert {len(e.ops) for cell in fixed.cells for e in cell.edges} == {1}  # one operation per edge, no search
    assert fixed.channels > settings.channels  # widened to match
    assert abs(count_params(DiscreteNet(fixed)) - start) / start < 0.2
