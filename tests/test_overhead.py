"""The overhead benchmark's accounting (benchmarks/overhead.py), on hand-made rows and probe records:
the overhead formula, the breakdown that adds up to wall x CPUs, the pooled figures and the markdown."""

import json

import pytest

from helpers import load_benchmark

overhead = load_benchmark("overhead")


def a_run(arm="spidernet", wall=10.0, mutation_seconds=1.5):
    """Two steps of 3 CPU-s training, 0.5 validation, 1.0 measurement; one exploit with proxies."""
    rows = [{"train_cpu_seconds": 3.0, "train_seconds": 3.1, "eval_cpu_seconds": 0.5, "measure_cpu_seconds": 1.0,
             "training_iteration": i + 1, "mutation": ""} for i in range(2)]
    rows[1]["mutation"] = json.dumps({"seconds": mutation_seconds})
    probes = [{"phase": "train", "cpu": 4.75, "pid": 1}, {"phase": "train", "cpu": 4.75, "pid": 2},
              {"phase": "restore", "cpu": 2.0, "pid": 2}, {"phase": "save", "cpu": 0.5, "pid": 1},
              {"phase": "init", "cpu": 1.0, "pid": 1}, {"phase": "init", "cpu": 1.0, "pid": 2}]
    overhead.DRIVER[arm] = {"scheduler_seconds": 0.01, "scheduler_calls": 2, "exploits": 1}
    run = {"rows": rows, "fit_seconds": wall, "total_seconds": wall + 1, "driver_cpu_seconds": 0.2,
           "ray_daemon_cpu_seconds": 0.1, "errors": 0, "once_per_run_seconds": 2.0, "population": 2,
           "cpus_per_trial": 1.0}
    return overhead.account(arm, run, probes, cpus=2)


def test_overhead_is_one_minus_training_over_wall_times_cpus_and_the_breakdown_adds_up():
    result = a_run()
    assert result["overhead_fraction"] == pytest.approx(1 - 6.0 / 20.0)
    assert result["overhead_fraction_step"] == pytest.approx(1 - 9.5 / 20.0)
    assert sum(result["breakdown_cpu_seconds"].values()) == pytest.approx(20.0)
    assert result["breakdown_cpu_seconds"]["rest_of_step"] == pytest.approx(9.5 - 6.0 - 1.0 - 2.0)
    assert result["breakdown_cpu_seconds"]["outside_actor_calls"] == pytest.approx(20.0 - 9.5 - 2.0 - 0.5 - 2.0)
    assert result["actor_processes"] == 2 and result["proxy_wall_seconds"] == 1.5


def test_pooled_figures_weight_runs_by_length_and_can_count_measurement_and_proxies_as_work():
    short, long = a_run(wall=10.0), a_run(wall=30.0)
    assert overhead.pooled([short, long]) == pytest.approx(1 - 12.0 / 80.0)
    # Training 6 + measurement 2 + proxies 1.5 of 20 CPU-s.
    assert overhead.own_work_excluded([short]) == pytest.approx(1 - 9.5 / 20.0)


def test_the_markdown_says_how_members_share_the_cpus():
    assert overhead.taking_turns({"population": 8, "cpus_per_trial": 1}, cpus=2) == "1: 2 of 8 at a time, taking turns"
    assert overhead.taking_turns({"population": 8, "cpus_per_trial": 0.25}, cpus=2) == "0.25: all 8 at once"


def test_the_once_per_run_work_can_be_counted_in_the_wall():
    run = a_run(wall=10.0)  # 6 CPU-s of training, 2 s once per run, 2 CPUs
    assert overhead.once_per_run_counted([run]) == pytest.approx(1 - 6.0 / 24.0)


def test_shared_arms_spread_the_cpus_and_the_others_give_one_each():
    base = overhead.SearchConfig(population=8, name="x")
    assert overhead.arm_config(base, "spidernet_shared", 0, cpus=2).cpus_per_trial == 0.25
    assert overhead.arm_config(base, "stock_pbt", 0, cpus=2).cpus_per_trial == 1.0
    at_cpus = overhead.arm_config(base, "spidernet_at_cpus", 0, cpus=2)
    assert (at_cpus.population, at_cpus.cpus_per_trial) == (2, 1.0)


def test_bad_settings_are_a_one_line_error_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        overhead.main(["--rounds", "0", "--arms", "spidernet"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "overhead.py: error: --rounds must be a positive integer, got 0"
