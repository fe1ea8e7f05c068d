"""The run description: one typed object, built once from defaults, a config file and flags, validated once.

Every field of ``SearchConfig`` carries its help text; the command line is generated from the fields
(``add_flags``), so a flag, its help and the default ``--help`` shows live in one place. Config files
are TOML whose keys are the field names (``population = 8``); flags given on the command line override
the file, the file overrides the defaults (``resolve``). A run directory keeps the config it was
started with (``search_config.json``), which ``--resume``, retrain and report read back
(``read_run_config``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

from spidernet_ray.genome import Genome, GenomeError
from spidernet_ray.pareto import parse_objectives
from spidernet_ray.record import OBJECTIVE_METRICS
from spidernet_ray.rundir import CONFIG_FILE, atomic_write_text, is_finite_number

GATES = ("hard", "sigmoid")


class ConfigError(ValueError):
    """Bad input in a flag or a config file; reported in one line before anything runs."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line like every other input error (argparse prints the whole usage
    first): ``<program>: error: <message> (see --help)``, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog.removeprefix('python -m ')}: error: {message} (see --help)\n")


def run_command(program: str, command: Callable[[], int], input_errors: tuple[type[Exception], ...]) -> int:
    """``command()``'s exit code, or 2 with one line on stderr when it raises one of ``input_errors``
    (bad input, found before anything is written)."""
    try:
        return command()
    except input_errors as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return 2


def setting(default, help: str, **flag):
    """A config field with the help text (and any extra ``add_argument`` keywords) of its flag."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


@dataclass(frozen=True)
class SearchConfig:
    # What to search on
    dataset: str = setting("digits", "dataset name (see --help's list)")
    data_root: str | None = setting(None, "folder with the dataset's files")
    subset: int | None = setting(None, "use only this many training examples")
    val_fraction: float = setting(0.1, "share of the training data held out for validation")
    download: bool = setting(False, "download with torchvision if the files are missing")
    # Search space and budget
    strategy: str = setting("spidernet", "spidernet (the search); baselines: random (random architectures, no "
                            "scheduler), random_asha (the same under ASHA early stopping) or pbt (stock PBT on "
                            "a fixed hand-written network)")
    reductions: int = setting(2, "stride-2 cells after the first cell")
    channels: int = setting(8, "channels of the first cell")
    population: int = setting(4, "members trained at once")
    rounds: int = setting(6, "rounds per member (one report, one chance of exploit each)")
    epochs_per_round: int = setting(2, "training epochs per round")
    time_budget_s: float | None = setting(None, "stop the whole run after this many seconds of wall time")
    batch_size: int = setting(64, "training batch size")
    # Training recipe (lr, weight_decay and pressure are the perturbed hyperparameters)
    lr: float = setting(0.05, "learning rate (members draw theirs from [lr/2, 2 lr])")
    weight_decay: float = setting(3e-4, "weight decay (members draw from [wd/3, 3 wd])")
    drop_path: float = setting(0.0, "drop-path probability")
    momentum: float = setting(0.9, "SGD momentum")
    gate: str = setting("hard", "pruning gate: hard or sigmoid")
    pressure: float = setting(3e-2, "initial resource-pressure coefficient (members draw theirs from "
                              "[p/3, 3 p]); 0 turns it off")
    pressure_mu: float = setting(1.0, "weight of an op's cost in the gate pressure")
    pressure_cost: str = setting("latency", "what the gate pressure weighs an op by: latency (the run's per-op "
                                 "table, measured once) or params")
    start_ops: int = setting(3, "candidate ops per edge of a member's starting supernet, drawn per member "
                             "(0: every op)")
    mutation_candidates: int = setting(4, "cell mutations a clone draws and ranks by estimated latency")
    proxies: bool = setting(False, "a clone scores candidate splits with the NTK / linear-region proxies "
                            "instead of cheap latency estimates (slow)")
    deadhead_window: int = setting(1, "epochs over which gate-open counts are pooled")
    initial_splits: int = setting(2, "random splits per member at the start, so the population starts diverse")
    candidates_per_cell: int = setting(2, "candidate splits scored per cell on a mutation")
    # Proxy sizes for scoring a split (proxies.choose_split).
    proxy_inits: int = setting(1, "random initialisations the proxies average over")
    proxy_samples: int = setting(32, "inputs of the NTK proxy")
    proxy_grid: int = setting(16, "side of the linear-region proxy's input grid")
    # Search-space extensions, each off until benchmarks/compare.py shows it helps (README "Search-space
    # extensions").
    channel_search: bool = setting(True, "channel-wise gates inside conv ops; shut channels are removed "
                                   "(narrower network)")
    gradual_pruning: bool = setting(False, "delete at most --prune-per-epoch ops per epoch, those open least "
                                    "often first")
    prune_per_epoch: int = setting(2, "ops deleted per epoch at most with --gradual-pruning")
    snapshot_stable_epochs: int = setting(0, "offer the architecture to the Pareto archive whenever nothing "
                                          "was pruned for K epochs (0: never)", metavar="K")
    macro_mutations: bool = setting(False, "clones may also add or remove a cell or widen or narrow the channels")
    crossover: bool = setting(False, "some clones mix the cells of two front members instead of mutating one")
    macro_probability: float = setting(0.3, "share of clones given a macro mutation, with --macro-mutations")
    crossover_probability: float = setting(0.3, "share of clones made by crossover, with --crossover")
    genome: str | None = setting(None, "genome JSON file (e.g. from pareto.parquet) every member starts from; "
                                 "sets --reductions and --channels", metavar="FILE")
    # Hardware budgets and objectives
    latency_budget_ms: float | None = setting(None, "latency budget of a network")
    memory_budget_mb: float | None = setting(None, "peak training memory budget of a network")
    latency_batch_size: int = setting(1, "batch size of the latency measurement")
    measure_every_round: bool = setting(False, "measure every member's network every round instead of estimating "
                                        "it from the run's cost model (keep a whole CPU per member then: a "
                                        "measurement needs the CPU to itself)")
    objectives: tuple[str, ...] = setting(("max:val_accuracy", "min:latency_ms"),
                                          f"MODE:METRIC... with METRIC one of {', '.join(OBJECTIVE_METRICS)}",
                                          nargs="+")
    quantile_fraction: float = setting(0.25, "share of the population cloned over / cloned from")
    # Where and how it runs
    address: str | None = setting(None, "attach to a running Ray cluster ('auto' finds the local one)")
    num_cpus: int | None = setting(None, "CPUs for a local Ray (default: all)")
    num_gpus: float = setting(0, "GPUs to use in total (checked against the cluster)")
    cpus_per_trial: float = setting(1, "CPUs per member; members beyond the CPUs take turns (Tune pauses and "
                                    "resumes them each round). A fraction (CPUs / population) lets all train at "
                                    "once, sharing the CPUs: each member then starts its own worker process, "
                                    "which pays off only over long searches on this kind of machine")
    gpus_per_trial: float | None = setting(None, "GPUs per member, fractional allowed (default: num-gpus / "
                                           "population, at most 1)")
    storage_path: str = setting("~/spidernet_runs", "folder that holds run directories")
    name: str | None = setting(None, "experiment name (default: strategy-dataset-timestamp)")
    resume: bool = setting(False, "continue the experiment --name")
    seed: int = setting(0, "seed of the data split and the members' draws")
    verbose: int = setting(0, "0: our progress only; 1: also what members print and Ray's warnings; 2: also "
                                 "Ray's trial table and logs; 3: also every result Ray hears")
    tracking: str | None = setting(None, "also log every member's rounds to mlflow or wandb (Ray Tune's own "
                                   "logger callbacks; pip install 'spidernet_ray[mlflow]' or '[wandb]')",
                                   choices=("mlflow", "wandb"))
    dashboard: bool = setting(False, "start a local Ray with its dashboard, bound to 127.0.0.1")
    inject_nan_round: int | None = setting(None, "fault injection for testing: the first member's weights turn "
                                           "NaN at the start of every round from ROUND on", metavar="ROUND")

    @property
    def budgets(self) -> dict[str, float]:
        named = {"latency_ms": self.latency_budget_ms, "peak_memory_mb": self.memory_budget_mb}
        return {k: v for k, v in named.items() if v is not None}

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
        from spidernet_ray.strategies import strategy_names

        positive_ints = ["reductions", "channels", "population", "rounds", "epochs_per_round", "batch_size",
                         "deadhead_window", "candidates_per_cell", "mutation_candidates", "latency_batch_size",
                         "prune_per_epoch", "proxy_inits", "proxy_samples", "proxy_grid"]
        for name in positive_ints:
            value = getattr(self, name)
            if name == "reductions" and value == 0:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{flag_name(name)} must be a positive integer, got {value!r}")
        for name in ["lr", "cpus_per_trial"]:
            if not is_finite_number(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"{flag_name(name)} must be a positive number, got {getattr(self, name)!r}")
        for name in ["weight_decay", "momentum", "pressure", "pressure_mu", "num_gpus", "initial_splits",
                     "snapshot_stable_epochs", "start_ops"]:
            if not is_finite_number(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{flag_name(name)} must be a non-negative number, got {getattr(self, name)!r}")
        for name in ["latency_budget_ms", "memory_budget_mb", "cpus_per_trial", "gpus_per_trial", "num_cpus", "subset",
                     "inject_nan_round", "time_budget_s"]:
            value = getattr(self, name)
            if value is not None and (not is_finite_number(value) or value <= 0):
                raise ConfigError(f"{flag_name(name)} must be a positive number, got {value!r}")
        if not isinstance(self.verbose, int) or isinstance(self.verbose, bool) or self.verbose < 0:
            raise ConfigError(f"--verbose must be 0, 1, 2 or 3, got {self.verbose!r}")
        if self.dashboard and self.address:
            raise ConfigError("--dashboard starts a local Ray's dashboard; an attached cluster serves its own")
        if self.num_gpus > 0 and self.gpus_per_trial is not None and self.gpus_per_trial > self.num_gpus:
            raise ConfigError(f"--gpus-per-trial {self.gpus_per_trial:g} exceeds --num-gpus {self.num_gpus:g}")
        for name in ["macro_probability", "crossover_probability"]:
            if not is_finite_number(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{flag_name(name)} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0 <= self.drop_path < 1:
            raise ConfigError(f"--drop-path must be in [0, 1), got {self.drop_path!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction!r}")
        if not 0 < self.quantile_fraction <= 0.5:
            raise ConfigError(f"--quantile-fraction must be in (0, 0.5], got {self.quantile_fraction!r}")
        if self.strategy not in strategy_names():
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose from {', '.join(strategy_names())}")
        if self.pressure_cost not in ("latency", "params"):
            raise ConfigError(f"--pressure-cost must be latency or params, got {self.pressure_cost!r}")
        if self.tracking not in (None, "mlflow", "wandb"):
            raise ConfigError(f"unknown --tracking {self.tracking!r}; choose mlflow or wandb")
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


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


FIELD_TYPES = {f.name: f.type for f in fields(SearchConfig)}
_FLAG_TYPES = {"int": int, "float": float, "str": str}


# -- the command line ----------------------------------------------------------------------------
def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field, its help and shown default taken from the field. Every flag defaults to None
    ('not given'), so ``resolve`` can tell a flag from the file and the defaults."""
    for f in fields(SearchConfig):
        extra = {k: v for k, v in f.metadata.items() if k != "help"}
        shown = f.default if not isinstance(f.default, tuple) else " ".join(f.default)
        help_text = f.metadata["help"] + ("" if f.default in (None, False) else f" (default: {shown})")
        if f.type == "bool":
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            parser.add_argument(flag_name(f.name), action=action, default=None, help=help_text, **extra)
        else:
            kind = _FLAG_TYPES.get(f.type.removesuffix(" | None"), str)
            parser.add_argument(flag_name(f.name), type=kind, default=None, help=help_text, **extra)


def resolve(config_file: str | None, flags: dict) -> SearchConfig:
    """The run description: defaults <- config file <- flags (a flag given as None is 'not given');
    on ``--resume`` the saved run's config stands in for the defaults; a ``--genome`` file sets the
    depth and width of the network."""
    if flags.get("objectives") is not None:
        flags = {**flags, "objectives": tuple(flags["objectives"])}
    file_values = read_config_file(config_file) if config_file else {}
    config = build_config(file_values, flags)  # validates the flags and the file
    if config.resume:
        return build_config({**read_saved_config(config.experiment_path / CONFIG_FILE), **file_values}, flags)
    if config.genome:
        # The genome fixes the network's depth and width; a flag or key saying otherwise is a mistake.
        start = read_genome_file(config.genome)
        for key in ("reductions", "channels"):
            given = flags.get(key) if flags.get(key) is not None else file_values.get(key)
            if given is not None and given != getattr(start, key):
                raise ConfigError(f"--{key} {given} contradicts {config.genome}, "
                                  f"whose genome has {getattr(start, key)}")
        config = dataclasses.replace(config, reductions=start.reductions, channels=start.channels).validate()
    return config


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
        config = dataclasses.replace(config, name=f"{config.strategy}-{config.dataset}-{datetime.now():%Y%m%d-%H%M%S}")
    return config.validate()


def _check_type(key: str, value) -> None:
    kind = FIELD_TYPES[key]
    expected = {
        "int": int, "float": (int, float), "str": str, "bool": bool,
        "str | None": str, "int | None": int, "float | None": (int, float), "tuple[str, ...]": tuple,
    }[kind]
    if isinstance(value, bool) and kind != "bool":
        raise ConfigError(f"{flag_name(key)} must be {kind.split(' ')[0]}, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{flag_name(key)} must be {kind.split(' ')[0]}, got {value!r}")


# -- a saved run's config -------------------------------------------------------------------------
def read_saved_config(path: Path) -> dict:
    """The settings a stopped search was started with, as a dict of given values (``--resume``)."""
    if not path.is_file():
        raise ConfigError(f"nothing to resume: {path} does not exist")
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot resume: {path} is unreadable ({exc.__class__.__name__})") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"cannot resume: {path} does not hold a search config")
    unknown = sorted(set(saved) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(f"cannot resume: {path} has unknown key(s) {', '.join(unknown)}")
    values = {k: v for k, v in saved.items() if v is not None}
    if isinstance(values.get("objectives"), list):
        values["objectives"] = tuple(values["objectives"])
    return values


def read_run_config(run_dir: str | Path) -> SearchConfig:
    """The ``SearchConfig`` a run directory was started with (retrain and report read it)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a search run directory: it has no {CONFIG_FILE}")
    try:
        values = read_saved_config(path)
        for key, value in values.items():
            _check_type(key, value)
        return SearchConfig(**values)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("cannot resume: ", "")) from None


def write_run_config(config: SearchConfig) -> None:
    atomic_write_text(config.experiment_path / CONFIG_FILE, json.dumps(dataclasses.asdict(config), indent=1))


def read_genome_file(path: str) -> Genome:
    """A genome JSON file, as the ``genome`` column of trials.parquet or pareto.parquet holds."""
    try:
        text = Path(path).expanduser().read_text()
    except FileNotFoundError:
        raise ConfigError(f"genome file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"genome file {path} is unreadable: {exc.__class__.__name__}") from None
    try:
        return Genome.from_json(text)
    except GenomeError as exc:
        raise GenomeError(f"genome file {path}: {exc}") from None
