"""The Fashion-MNIST end-to-end benchmark (benchmarks/fmnist_end_to_end.py), its pure parts: the hand-written
CNN, the dominance verdict, the sizing and the report. The search and the training run only in the script."""

import math
import subprocess
import sys

import pytest
import torch

from helpers import BENCHMARKS, load_benchmark

pytestmark = pytest.mark.subprocess

e2e = load_benchmark("fmnist_end_to_end")


def row(network, kind, test_accuracy, latency_ms, params=30_000):
    return {"network": network, "kind": kind, "test_accuracy": test_accuracy, "latency_ms": latency_ms,
            "params": params}


HAND = row("hand_cnn", "hand_cnn", 0.925, 0.40, params=50_378)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 14, 14)])
def test_the_hand_cnn_is_under_100k_parameters_and_trains_with_the_recipes_step(shape):
    from spidernet_ray.hardware import count_params
    from spidernet_ray.train import make_optimizer, train_step

    model = e2e.build_network(e2e.HAND_CNN, {}, shape, 10)
    assert count_params(model) < e2e.MAX_PARAMS
    x, y = torch.randn(8, *shape), torch.randint(0, 10, (8,))
    assert model(x).shape == (8, 10)
    assert math.isfinite(train_step(model, make_optimizer(model), x, y))


def test_the_hand_cnn_is_measured_like_every_network():
    figures = e2e.measure_network(e2e.HandCNN((1, 14, 14), 10), (1, 14, 14), 10, batch_size=16)
    assert figures["params"] == sum(p.numel() for p in e2e.HandCNN((1, 14, 14), 10).parameters())
    assert figures["latency_ms"] > 0 and figures["latency_batch_ms"] > 0 and figures["peak_memory_mb"] > 0


@pytest.mark.parametrize("searched, verdict", [
    (row("faster_and_better", "searched", 0.935, 0.30), True),
    (row("as_good_and_faster", "searched", 0.925, 0.30), False),  # dominates, but under 93 %
    (row("better_but_slower", "searched", 0.95, 0.50), False),
    (row("too_big", "searched", 0.95, 0.10, params=100_001), False),
])
def test_a_searched_network_beats_the_hand_cnn_only_when_it_dominates_it_at_93_percent(searched, verdict):
    stock = row("stock_pbt", "stock_pbt", 0.99, 0.01)  # a baseline never counts as a searched win
    result = e2e.verdict([searched, HAND, stock])
    assert result["searched_dominates_hand_cnn"] is verdict
    assert result["dominating_networks"] == ([searched["network"]] if verdict else [])
    assert result["hand_cnn_test_accuracy"] == 0.925 and result["hand_cnn_latency_ms"] == 0.40


def test_a_network_equal_in_both_objectives_does_not_dominate():
    twin = {**HAND, "network": "twin", "kind": "searched"}
    assert not e2e.dominates(twin, HAND) and not e2e.dominates(HAND, twin)
    assert e2e.dominates({**twin, "latency_ms": 0.39}, HAND)


def test_the_headline_is_the_most_accurate_searched_network_and_a_failed_one_is_skipped():
    rows = [row("a", "searched", 0.91, 2.0), row("b", "searched", 0.92, 5.0), row("c", "searched", None, 0.1), HAND]
    result = e2e.verdict(rows)
    assert (result["best_searched_network"], result["best_searched_test_accuracy"],
            result["best_searched_latency_ms"]) == ("b", 0.92, 5.0)
    assert not result["searched_dominates_hand_cnn"]


def test_the_closing_line_names_what_failed():
    report = {**e2e.verdict([row("b", "searched", 0.92, 5.0), HAND])}
    line = e2e.closing_line(report)
    assert line.startswith("**No**") and "92.00%, is under 93%" in line and "above the hand CNN's 0.400 ms" in line


def test_trials_are_packed_longest_first_onto_the_cpus():
    assert e2e.makespan([10, 10, 10, 10], cpus=2) == 20
    assert e2e.makespan([30, 10, 10, 10], cpus=2) == 30
    assert e2e.makespan([5], cpus=2) == 5


def test_an_epoch_of_every_network_is_its_probe_with_validation_packed_onto_the_cpus():
    allowance = 1 + e2e.EVAL_SHARE
    assert e2e.epoch_wall_seconds([100, 100], cpus=2) == pytest.approx(100 * allowance)
    assert e2e.epoch_wall_seconds([100, 100], cpus=1) == pytest.approx(200 * allowance)


def test_the_epochs_are_as_many_as_fit_the_time_left_within_one_and_the_maximum():
    epoch = e2e.epoch_wall_seconds([100, 100], cpus=2)
    assert e2e.choose_epochs([100, 100], cpus=2, seconds_left=9.5 * epoch, max_epochs=10) == 9
    assert e2e.choose_epochs([100, 100], cpus=2, seconds_left=50 * epoch, max_epochs=10) == 10
    assert e2e.choose_epochs([100, 100], cpus=2, seconds_left=0.5 * epoch, max_epochs=10) == 1


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "fmnist_end_to_end.py"), "--cpus", "0",
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "fmnist_end_to_end.py: error:" in done.stderr and not (tmp_path / "out").exists()


def test_the_probe_scales_a_networks_step_time_to_an_epoch():
    one_step = e2e.probe_epoch_seconds(e2e.HAND_CNN, {}, (1, 14, 14), 10, batch_size=16, train_examples=16)
    ten_steps = e2e.probe_epoch_seconds(e2e.HAND_CNN, {}, (1, 14, 14), 10, batch_size=16, train_examples=160)
    assert 0 < one_step and 2 * one_step < ten_steps
