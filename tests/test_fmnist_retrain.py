"""The Fashion-MNIST retrain benchmark (benchmarks/fmnist_retrain.py): bad input is one line and exit 2
with nothing written; the report reads the epochs of the newest retrain of the chosen network."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import BENCHMARKS, load_benchmark

pytestmark = pytest.mark.subprocess

fmnist_retrain = load_benchmark("fmnist_retrain")


def run_script(*args):
    return subprocess.run([sys.executable, str(BENCHMARKS / "fmnist_retrain.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("dataset", [None, "digits"])
def test_a_run_dir_that_is_no_fashion_mnist_search_is_one_line_and_exit_2(tmp_path, dataset):
    run_dir, output = tmp_path / "run", tmp_path / "out"
    if dataset:
        run_dir.mkdir()
        (run_dir / "search_config.json").write_text(json.dumps({"dataset": dataset}))
        (run_dir / "pareto.parquet").write_bytes(b"")
    done = run_script(run_dir, "--output", output)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "fmnist_retrain.py: error:" in done.stderr
    assert (dataset or "holds no finished search") in done.stderr
    assert not output.exists()


def write_epochs(trial_dir: Path, accuracies: list[float]) -> None:
    trial_dir.mkdir(parents=True)
    rows = [{"epoch": i + 1, "val_accuracy": a, "train_loss": 1.0 - a, "train_seconds": 10.0 * (i + 1)}
            for i, a in enumerate(accuracies)]
    (trial_dir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_report_shows_the_newest_retrain_of_the_chosen_network(tmp_path):
    retrain_dir = tmp_path / "retrain"
    write_epochs(retrain_dir / "tune-20261124-080000" / "retrain_abc", [0.5, 0.6])
    write_epochs(retrain_dir / "tune-20261124-090000" / "retrain_abc", [0.7, 0.8, 0.9])
    write_epochs(retrain_dir / "tune-20261124-100000" / "retrain_other", [0.1])
    epochs = fmnist_retrain.epoch_history(retrain_dir, "abc")
    assert [e["val_accuracy"] for e in epochs] == [0.7, 0.8, 0.9]

    row = {"genome_hash": "abc", "source_trial": "t_1", "source_round": 5, "search_val_accuracy": 0.8175,
           "epochs": 3, "train_examples": 54000, "val_examples": 6000, "test_examples": 10000,
           "test_accuracy": 0.92, "params": 31624, "seconds_per_epoch": 140.0}
    report = {"wall_seconds": 450.0, "command": "python -m spidernet_ray.retrain run", "epochs": epochs,
              "search": {"population": 4, "rounds": 5, "epochs_per_round": 2, "subset": 4000, "channels": 8,
                         "reductions": 2},
              "retrained": row, "load_average_after": 1.0, "code": "git 0000000", "date": "2026-11-24"}
    path = tmp_path / "fmnist_retrain.md"
    fmnist_retrain.write_markdown(report, "# Retrained from scratch\n\n| genome hash |\n|---|\n| `abc` |\n", path)
    text = path.read_text()
    assert "**Test accuracy 92.00%** with 31,624 parameters" in text
    assert "after each epoch: 70.00%, 80.00%, 90.00%." in text
    assert "Wall time 7.5 min" in text and text.endswith("| `abc` |\n")
