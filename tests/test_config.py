"""Specification of the run description: one SearchConfig whose fields make the flags, resolved from
defaults, a config file and flags, saved with the run and read back whole."""

import dataclasses

import pytest

from spidernet_ray import launch
from spidernet_ray.config import (
    ConfigError,
    SearchConfig,
    read_run_config,
    resolve,
    write_run_config,
)
from spidernet_ray.genome import initial_genome
from spidernet_ray.record import OBJECTIVE_METRICS
from spidernet_ray.strategies import strategy_names


def test_every_field_is_a_flag_whose_help_shows_the_fields_default(capsys):
    with pytest.raises(SystemExit):
        launch.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for field in dataclasses.fields(SearchConfig):
        assert "--" + field.name.replace("_", "-") in text
    assert "members trained at once (default: 4)" in text
    assert "learning rate (members draw theirs from [lr/2, 2 lr]) (default: 0.05)" in text


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("population = 6\nrounds = 3\n")
    config = launch.resolve_config(launch.parse_args(["--config", str(toml), "--rounds", "5", "--name", "x"]))
    assert (config.population, config.rounds, config.epochs_per_round) == (6, 5, SearchConfig.epochs_per_round)


def test_a_flag_left_out_is_not_a_flag_given():
    args = launch.parse_args(["--name", "x"])
    assert args.population is None and args.channel_search is None and args.objectives is None
    assert launch.resolve_config(args) == SearchConfig(name="x").validate()


def test_boolean_flags_turn_a_default_off_or_an_option_on():
    config = launch.resolve_config(launch.parse_args(["--no-channel-search", "--crossover", "--name", "x"]))
    assert not config.channel_search and config.crossover


def test_a_saved_run_config_reads_back_equal(tmp_path):
    config = SearchConfig(storage_path=str(tmp_path), name="run", population=3, objectives=("max:val_accuracy",
                                                                                           "min:latency_ms"))
    config.experiment_path.mkdir()
    write_run_config(config)
    assert read_run_config(config.experiment_path) == config


def test_resume_takes_the_saved_config_and_only_the_flags_given_again(tmp_path):
    saved = SearchConfig(storage_path=str(tmp_path), name="run", population=3, rounds=2)
    saved.experiment_path.mkdir()
    write_run_config(saved)
    resumed = resolve(None, {"storage_path": str(tmp_path), "name": "run", "resume": True, "rounds": 4})
    assert (resumed.population, resumed.rounds, resumed.resume) == (3, 4, True)


def test_a_run_directory_without_a_config_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is not a search run directory"):
        read_run_config(tmp_path)


def test_a_genome_file_sets_depth_and_width(tmp_path):
    genome = initial_genome((1, 8, 8), 10, reductions=1, channels=6)
    (tmp_path / "g.json").write_text(genome.to_json())
    config = resolve(None, {"genome": str(tmp_path / "g.json"), "name": "x"})
    assert (config.reductions, config.channels) == (1, 6)


def test_strategies_and_objective_metrics_come_from_their_registries():
    assert {"spidernet", "random", "random_asha", "pbt"} <= set(strategy_names())
    assert {"val_accuracy", "latency_ms", "peak_memory_mb", "params"} <= set(OBJECTIVE_METRICS)
    with pytest.raises(ConfigError, match="unknown strategy 'nope'; choose from spidernet, random"):
        SearchConfig(strategy="nope").validate()


def test_budgets_name_the_metrics_they_bound():
    assert SearchConfig(latency_budget_ms=5.0).budgets == {"latency_ms": 5.0}
    assert SearchConfig(memory_budget_mb=9.0, latency_budget_ms=1.0).budgets == {"latency_ms": 1.0,
                                                                                 "peak_memory_mb": 9.0}


def test_a_negative_verbose_level_is_refused():
    with pytest.raises(ConfigError, match="--verbose must be 0, 1, 2 or 3, got -1"):
        SearchConfig(verbose=-1).validate()
