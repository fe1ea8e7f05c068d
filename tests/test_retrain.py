"""Retrain: choosing architectures from a run, refusing bad input before anything is written, and a
real end-to-end retrain on the synthetic data with a tiny budget on a local Ray."""

import pyarrow.parquet as pq
import pytest
import torch

from spidernet_ray import retrain
from spidernet_ray.checkpoint import load_checkpoint
from spidernet_ray.genome import Genome
from spidernet_ray.supernet import DiscreteNet
from test_report import PNG_MAGIC, make_run_dir  # the hand-made run directory of real genomes


@pytest.fixture
def run_dir(tmp_path):
    return make_run_dir(tmp_path / "run")


# -- choosing what to retrain ----------------------------------------------------------------------
def test_front_gives_every_front_architecture_best_search_accuracy_first(run_dir):
    front = pq.read_table(run_dir / "pareto.parquet").to_pylist()
    chosen = retrain.select_candidates(run_dir, front=True)
    assert [c.genome_hash for c in chosen] == [r["genome_hash"] for r in front]
    assert chosen[0].source_trial == "t_b" and chosen[0].source_round == 3


def test_a_member_is_its_best_row_by_val_accuracy(run_dir):
    (c,) = retrain.select_candidates(run_dir, members=["t_a"])
    assert (c.source_trial, c.source_round, c.search["val_accuracy"]) == ("t_a", 3, 0.60)
    assert Genome.from_json(c.genome).hash == c.genome_hash


def test_members_sharing_an_architecture_are_retrained_once(run_dir):
    chosen = retrain.select_candidates(run_dir, members=["t_b", "t_a", "t_b"])
    assert [c.source_trial for c in chosen] == ["t_b", "t_a"]


def test_max_params_and_top_narrow_the_choice(run_dir):
    every = retrain.select_candidates(run_dir, front=True)
    smallest = min(c.search["params"] for c in every)
    small = retrain.select_candidates(run_dir, front=True, max_params=smallest)
    assert small and all(c.search["params"] <= smallest for c in small)
    assert len(retrain.select_candidates(run_dir, front=True, top=1)) == 1


# -- bad input: one line on stderr, exit 2, nothing written -------------------------------------------
@pytest.mark.parametrize("case, args", [
    ("missing run dir", ["{missing}", "--front", "--epochs", "1"]),
    ("no pareto.parquet", ["{run}", "--front", "--epochs", "1"]),
    ("unknown member", ["{run}", "--members", "t_zz", "--epochs", "1"]),
    ("zero epochs", ["{run}", "--front", "--epochs", "0"]),
    ("negative epochs", ["{run}", "--front", "--epochs", "-3"]),
    ("nothing under the parameter limit", ["{run}", "--front", "--epochs", "1", "--max-params", "10"]),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_dir, tmp_path, capsys, case, args):
    if case == "no pareto.parquet":
        (run_dir / "pareto.parquet").unlink()
    before = sorted(p.name for p in run_dir.iterdir())
    argv = [a.format(missing=tmp_path / "nowhere", run=run_dir) for a in args]
    assert retrain.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("spidernet_ray.retrain: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert not (tmp_path / "nowhere").exists()


def test_a_trial_that_stopped_early_or_diverged_says_so_in_its_row():
    assert retrain._problem({"epoch": 2}, None, 5) == "stopped after 2 of 5 epochs"
    assert retrain._problem({"epoch": 1, "diverged": True}, None, 5) == "training diverged in epoch 1"
    assert retrain._problem({"epoch": 5, "test_accuracy": 0.9}, None, 5) == ""


# -- end to end on a real local Ray ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def retrained(ray_local, tmp_path_factory):
    run_dir = make_run_dir(tmp_path_factory.mktemp("e2e") / "run")
    code = retrain.main([str(run_dir), "--front", "--top", "2", "--epochs", "1", "--batch-size", "32", "--export"])
    return code, run_dir


def test_retrain_trains_each_architecture_from_scratch_and_quotes_test_accuracy(retrained):
    code, run_dir = retrained
    assert code == 0
    rows = pq.read_table(run_dir / "retrain" / "retrain.parquet").to_pylist()
    front = pq.read_table(run_dir / "pareto.parquet").to_pylist()[:2]
    assert {r["genome_hash"] for r in rows} == {r["genome_hash"] for r in front}
    for row in rows:
        assert row["error"] == "" and row["epochs"] == 1
        assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["val_accuracy"] <= 1.0
        assert row["params"] > 0 and row["latency_ms"] > 0 and row["peak_memory_mb"] > 0
        assert row["train_seconds"] > 0
        assert row["test_examples"] == 250 and row["train_examples"] == 900  # the full synthetic splits
    assert "| genome hash |" in (run_dir / "retrain" / "retrain.md").read_text()


def test_each_retrained_network_is_saved_as_a_loadable_discrete_checkpoint(retrained):
    _, run_dir = retrained
    for row in pq.read_table(run_dir / "retrain" / "retrain.parquet").to_pylist():
        folder = run_dir / row["checkpoint"]
        assert folder == run_dir / "retrain" / row["genome_hash"]
        model = load_checkpoint(folder)
        assert isinstance(model, DiscreteNet) and model.genome.hash == row["genome_hash"]
        assert sum(p.numel() for p in model.parameters()) == row["params"]
        assert (folder / "preprocess.json").is_file()


def test_export_flag_writes_checked_files_beside_each_checkpoint(retrained):
    _, run_dir = retrained
    for row in pq.read_table(run_dir / "retrain" / "retrain.parquet").to_pylist():
        folder = run_dir / row["checkpoint"]
        assert {"model.pt2", "model.ts"} <= set(row["exported"].split(","))
        x = torch.randn(3, 1, 8, 8)
        model = load_checkpoint(folder).eval()
        with torch.no_grad():
            assert torch.allclose(torch.export.load(str(folder / "model.pt2")).module()(x), model(x), atol=1e-5)


def test_retrain_ends_with_the_report_showing_the_retrained_figures(retrained):
    _, run_dir = retrained
    text = (run_dir / "report.md").read_text()
    assert "## Retrained from scratch" in text and "report/retrain.png" in text
    assert (run_dir / "report" / "retrain.png").read_bytes()[:8] == PNG_MAGIC


# -- the recipe -------------------------------------------------------------------------------------------
def test_train_from_scratch_hears_every_epoch_but_the_last_and_tests_once_after_it():
    from spidernet_ray.data import load_dataset
    from spidernet_ray.genome import initial_genome

    splits = load_dataset("synthetic")
    model = DiscreteNet(initial_genome(splits.input_shape, splits.num_classes, 1, 4))
    heard = []
    metrics = retrain.train_from_scratch(model, splits, retrain.Recipe(epochs=3, batch_size=64), "cpu",
                                         on_epoch=heard.append)
    assert [m["epoch"] for m in heard] == [1, 2] and not any("test_accuracy" in m for m in heard)
    assert metrics["epoch"] == 3 and not metrics["diverged"] and 0.0 <= metrics["test_accuracy"] <= 1.0


def test_a_network_without_drop_path_is_refused_a_drop_path_recipe():
    from spidernet_ray.data import load_dataset

    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(retrain.RetrainError, match="no drop path"):
        retrain.train_from_scratch(plain, load_dataset("synthetic"), retrain.Recipe(epochs=1, drop_path=0.2), "cpu")
