"""The run description: one typed object, built once from defaults, a config file and flags, validated once.

Config files are TOML whose keys are the long flag names with underscores (``population = 8``);
flags given on the command line override the file, the file overrides the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from spidernet_ray.pareto import parse_objectives

# spidernet: the Pareto population search; random: random architectures, no scheduler; random_asha: random
# architectures stopped early by Ray Tune's ASHAScheduler; pbt: Ray Tune's stock PopulationBasedTraining on
# one fixed hand-written network (see spidernet_ray.baselines).
STRATEGIES = ("spidernet", "random", "random_asha", "pbt")
GATES = ("hard", "sigmoid")
# What every member reports each round (SpiderNetTrainable.step) that an objective may name.
OBJECTIVE_METRICS = ("val_accuracy", "val_loss", "train_loss", "latency_ms", "peak_memory_mb", "params", "flops",
                     "ops_alive")


class ConfigError(ValueError):
    """Bad input in a flag or a config file; reported in one line before anything runs."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line like every other input error (argparse prints the whole usage
    first): ``<program>: error: <message> (see --help)``, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog.removeprefix('python -m ')}: error: {message} (see --help)\n")


@dataclass(frozen=True)
class SearchConfig:
    # What to search on
    dataset: str = "digits"
    data_root: str | None = None
    subset: int | None = None
    val_fraction: float = 0.1
    download: bool = False
    # Search space and budget
    strategy: str = "spidernet"
    reductions: int = 2
    channels: int = 8
    population: int = 4
    rounds: int = 6
    epochs_per_round: int = 2
    batch_size: int = 64
    # Wall-clock seconds for the whole search (Tune's TuneConfig.time_budget_s); None: rounds alone end it.
    time_budget_s: float | None = None
    # Training recipe (lr, weight_decay, drop_path are the perturbed hyperparameters)
    lr: float = 0.05
    weight_decay: float = 3e-4
    drop_path: float = 0.0
    momentum: float = 0.9
    gate: str = "hard"
    pressure: float = 1e-3  # initial lambda of the resource-weighted gate pressure; 0 turns it off
    pressure_mu: float = 1.0
    deadhead_window: int = 1
    initial_splits: int = 2  # random splits per member at the start, so the population starts diverse
    candidates_per_cell: int = 2
    # Proxy sizes for scoring a split (proxies.choose_split): initialisations averaged, NTK samples, and the
    # side of the linear-region grid. benchmarks/proxy_quality.py compares them with larger sizes.
    proxy_inits: int = 1
    proxy_samples: int = 32
    proxy_grid: int = 16
    # Search-space extensions, each off until benchmarks/compare.py shows it helps (README "Search-space
    # extensions"): channel-wise gates that narrow conv ops (on: smaller best models and a larger memory
    # hypervolume in compare.md); gradual pruning (at most prune_per_epoch ops deleted per epoch) and an
    # architecture snapshot for the Pareto archive whenever nothing was pruned for snapshot_stable_epochs
    # epochs (0: none); macro mutations (add/remove a cell, widen/narrow); crossover.
    channel_search: bool = True
    gradual_pruning: bool = False
    prune_per_epoch: int = 2
    snapshot_stable_epochs: int = 0
    macro_mutations: bool = False
    crossover: bool = False
    macro_probability: float = 0.3  # share of clones given a macro mutation, when macro_mutations is on
    crossover_probability: float = 0.3  # share of clones made by crossover, when crossover is on
    genome: str | None = None  # a genome JSON file every member starts from instead of the initial genome
    # Hardware budgets and objectives
    latency_budget_ms: float | None = None
    memory_budget_mb: float | None = None
    latency_batch_size: int = 1
    objectives: tuple[str, ...] = ("max:val_accuracy", "min:latency_ms", "min:peak_memory_mb")
    quantile_fraction: float = 0.25
    # Where and how it runs
    address: str | None = None
    num_cpus: int | None = None
    num_gpus: float = 0
    cpus_per_trial: float = 1
    gpus_per_trial: float | None = None
    storage_path: str = "~/spidernet_runs"
    name: str | None = None
    resume: bool = False
    seed: int = 0
    verbose: int = 0
    dashboard: bool = False  # a local Ray's dashboard, bound to 127.0.0.1 (off by default)
    # Fault injection, for testing recovery: the first member's weights turn NaN at the start of this round.
    inject_nan_round: int | None = None

    @property
    def budgets(self) -> dict[str, float]:
        budgets = {}
        if self.latency_budget_ms is not None:
            budgets["latency_ms"] = self.latency_budget_ms
        if self.memory_budget_mb is not None:
            budgets["peak_memory_mb"] = self.memory_budget_mb
        return budgets

    @property
    def trial_gpus(self) -> float:
        """GPUs per trial: as given, else the total spread over the population (at most 1 each)."""
        if self.gpus_per_trial is not None:
            return self.gpus_per_trial
        if self.num_gpus <= 0:
            return 0.0
        return min(1.0, self.num_gpus / self.population)

    @property
    def experiment_path(self) -> Path:
        return Path(self.storage_path).expanduser().resolve() / self.name

    def validate(self) -> SearchConfig:
        positive_ints = ["reductions", "channels", "population", "rounds", "epochs_per_round", "batch_size",
                         "deadhead_window", "candidates_per_cell", "latency_batch_size", "prune_per_epoch",
                         "proxy_inits", "proxy_samples", "proxy_grid"]
        for name in positive_ints:
            value = getattr(self, name)
            if name == "reductions" and value == 0:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{_flag(name)} must be a positive integer, got {value!r}")
        for name in ["lr", "cpus_per_trial"]:
            if not _finite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"{_flag(name)} must be a positive number, got {getattr(self, name)!r}")
        for name in ["weight_decay", "momentum", "pressure", "pressure_mu", "num_gpus", "initial_splits",
                     "snapshot_stable_epochs"]:
            if not _finite(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} must be a non-negative number, got {getattr(self, name)!r}")
        for name in ["latency_budget_ms", "memory_budget_mb", "cpus_per_trial", "gpus_per_trial", "num_cpus", "subset",
                     "inject_nan_round", "time_budget_s"]:
            value = getattr(self, name)
            if value is not None and (not _finite(value) or value <= 0):
                raise ConfigError(f"{_flag(name)} must be a positive number, got {value!r}")
        if self.dashboard and self.address:
            raise ConfigError("--dashboard starts a local Ray's dashboard; an attached cluster serves its own")
        if self.num_gpus > 0 and self.gpus_per_trial is not None and self.gpus_per_trial > self.num_gpus:
            raise ConfigError(f"--gpus-per-trial {self.gpus_per_trial:g} exceeds --num-gpus {self.num_gpus:g}")
        for name in ["macro_probability", "crossover_probability"]:
            if not _finite(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{_flag(name)} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0 <= self.drop_path < 1:
            raise ConfigError(f"--drop-path must be in [0, 1), got {self.drop_path!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction!r}")
        if not 0 < self.quantile_fraction <= 0.5:
            raise ConfigError(f"--quantile-fraction must be in (0, 0.5], got {self.quantile_fraction!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.gate not in GATES:
            raise ConfigError(f"unknown gate {self.gate!r}; choose from {', '.join(GATES)}")
        if self.name is not None and (not self.name or Path(self.name).name != self.name or self.name in (".", "..")):
            raise ConfigError(f"--name must be a plain folder name (no path), got {self.name!r}")
        if self.population < 2:
            raise ConfigError(f"--population must be at least 2 for a population search, got {self.population}")
        try:
            objectives = parse_objectives(self.objectives)
        except ValueError as exc:
            raise ConfigError(f"--objectives: {exc}") from None
        unknown = [o.metric for o in objectives if o.metric not in OBJECTIVE_METRICS]
        if unknown:
            raise ConfigError(f"--objectives: unknown metric {unknown[0]!r}; "
                              f"members report {', '.join(OBJECTIVE_METRICS)}")
        return self


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


FIELD_TYPES = {f.name: f.type for f in fields(SearchConfig)}


def read_config_file(path: str | Path) -> dict:
    """Read a TOML config; unknown keys and unreadable files are ConfigErrors."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is unreadable: {exc.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}")
    if "objectives" in data:
        if not isinstance(data["objectives"], list):
            raise ConfigError(f"config file {path}: objectives must be a list of strings, got {data['objectives']!r}")
        data["objectives"] = tuple(data["objectives"])
    return data


def build_config(file_values: dict, flag_values: dict) -> SearchConfig:
    """Defaults <- config file <- flags (flags given as None are 'not given')."""
    values = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    for key, value in values.items():
        _check_type(key, value)
    config = SearchConfig(**values)
    if config.resume and not config.name:
        raise ConfigError("--resume needs --name of the experiment to continue")
    if not config.name:
        from datetime import datetime

        config = dataclasses.replace(config, name=f"{config.strategy}-{config.dataset}-{datetime.now():%Y%m%d-%H%M%S}")
    return config.validate()


def _check_type(key: str, value) -> None:
    kind = FIELD_TYPES[key]
    expected = {
        "int": int, "float": (int, float), "str": str, "bool": bool,
        "str | None": str, "int | None": int, "float | None": (int, float), "tuple[str, ...]": tuple,
    }[kind]
    if isinstance(value, bool) and kind != "bool":
        raise ConfigError(f"{_flag(key)} must be {kind.split(' ')[0]}, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{_flag(key)} must be {kind.split(' ')[0]}, got {value!r}")
