"""Run a search: ``python -m spidernet_ray.launch [--config FILE] [flags]``.

With no flags: local Ray, the bundled digits data, CPU, a small population that finishes in a few
minutes, then the Pareto table. Results land in ``<storage-path>/<name>/`` beside Ray's own
experiment directory (which ``--resume`` and TensorBoard use).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pickletools
import socket
import sys
import time
from pathlib import Path

from spidernet_ray.config import ConfigError, OneLineArgumentParser, SearchConfig, build_config, read_config_file
from spidernet_ray.data import DataError, list_datasets, load_dataset
from spidernet_ray.genome import Genome, GenomeError, initial_genome
from spidernet_ray.pareto import nondominated_sort, objective_matrix, parse_objectives
from spidernet_ray.results import ROWS_FILE

CONFIG_FILE = "search_config.json"
STATE_FILE = "scheduler_state.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineArgumentParser(prog="python -m spidernet_ray.launch", description=__doc__.splitlines()[0],
                        argument_default=None)
    p.add_argument("--config", help="TOML file whose keys are these flags (underscores); flags override it")
    p.add_argument("--address", help="attach to a running Ray cluster ('auto' finds the local one)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--num-gpus", type=float, help="GPUs to use in total (checked against the cluster)")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float, help="fractional allowed; default num-gpus / population")
    p.add_argument("--population", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--epochs-per-round", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--time-budget-s", type=float, help="wall-clock seconds for the whole search (default: "
                   "none, the rounds end it); random and random_asha keep sampling members until it ends")
    p.add_argument("--dataset", help=f"one of: {', '.join(list_datasets())}")
    p.add_argument("--data-root", help="folder with the dataset's files")
    p.add_argument("--subset", type=int, help="use only this many training examples")
    p.add_argument("--download", action="store_true", default=None, help="download with torchvision if missing")
    p.add_argument("--reductions", type=int)
    p.add_argument("--channels", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--drop-path", type=float)
    p.add_argument("--gate", help="hard (default) or sigmoid")
    p.add_argument("--pressure", type=float, help="initial resource-pressure coefficient; 0 turns it off")
    p.add_argument("--pressure-mu", type=float, help="weight of an op's cost in the gate pressure")
    p.add_argument("--momentum", type=float)
    p.add_argument("--deadhead-window", type=int, help="epochs over which gate-open counts are pooled")
    p.add_argument("--initial-splits", type=int, help="random splits per member at the start")
    p.add_argument("--candidates-per-cell", type=int, help="candidate splits scored per cell on a mutation")
    p.add_argument("--proxy-inits", type=int, help="random initialisations the proxies average over (default 1)")
    p.add_argument("--proxy-samples", type=int, help="inputs of the NTK proxy (default 32)")
    p.add_argument("--proxy-grid", type=int, help="side of the linear-region proxy's input grid (default 16)")
    p.add_argument("--channel-search", action=argparse.BooleanOptionalAction, default=None,
                   help="channel-wise gates inside conv ops; shut channels are removed (narrower network); on "
                   "by default")
    p.add_argument("--gradual-pruning", action="store_true", default=None,
                   help="delete at most --prune-per-epoch ops per epoch, those open least often first")
    p.add_argument("--prune-per-epoch", type=int, help="ops deleted per epoch at most with --gradual-pruning")
    p.add_argument("--snapshot-stable-epochs", type=int, metavar="K",
                   help="offer the architecture to the Pareto archive whenever nothing was pruned for K epochs")
    p.add_argument("--macro-mutations", action="store_true", default=None,
                   help="clones may also add or remove a cell or widen or narrow the channels")
    p.add_argument("--crossover", action="store_true", default=None,
                   help="some clones mix the cells of two front members instead of mutating one")
    p.add_argument("--macro-probability", type=float, help="share of clones given a macro mutation (default 0.3)")
    p.add_argument("--crossover-probability", type=float, help="share of clones made by crossover (default 0.3)")
    p.add_argument("--genome", help="genome JSON file (e.g. from pareto.parquet) every member starts from; "
                   "sets --reductions and --channels")
    p.add_argument("--val-fraction", type=float, help="share of the training data held out for validation")
    p.add_argument("--quantile-fraction", type=float, help="share of the population cloned over / cloned from")
    p.add_argument("--latency-batch-size", type=int, help="batch size of the latency measurement (default 1)")
    p.add_argument("--latency-budget-ms", type=float)
    p.add_argument("--memory-budget-mb", type=float)
    p.add_argument("--objectives", nargs="+", help="e.g. max:val_accuracy min:latency_ms min:peak_memory_mb")
    p.add_argument("--strategy", help="spidernet (default); baselines: random (random architectures, no "
                   "scheduler), random_asha (the same, stopped early by ASHA) or pbt (stock PBT on a fixed "
                   "network)")
    p.add_argument("--storage-path")
    p.add_argument("--name", help="experiment name (default: strategy-dataset-timestamp)")
    p.add_argument("--resume", action="store_true", default=None, help="continue the experiment --name")
    p.add_argument("--seed", type=int)
    p.add_argument("--verbose", type=int, help="1 or 2: show Ray's own progress table and logs")
    p.add_argument("--dashboard", action="store_true", default=None,
                   help="start a local Ray with its dashboard, bound to 127.0.0.1 (off by default)")
    p.add_argument("--inject-nan-round", type=int, metavar="ROUND",
                   help="fault injection for testing: the first member's weights turn NaN at the start of ROUND")
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> SearchConfig:
    flags = {k: v for k, v in vars(args).items() if k != "config"}
    if flags.get("objectives") is not None:
        flags["objectives"] = tuple(flags["objectives"])
    file_values = read_config_file(args.config) if args.config else {}
    config = build_config(file_values, flags)  # validates the flags and the file
    if config.resume:
        file_values = {**read_saved_config(config.experiment_path / CONFIG_FILE), **file_values}
        return build_config(file_values, flags)
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


def read_saved_config(path: Path) -> dict:
    """The settings a stopped search was started with (``--resume``)."""
    if not path.is_file():
        raise ConfigError(f"nothing to resume: {path} does not exist")
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot resume: {path} is unreadable ({exc.__class__.__name__})") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"cannot resume: {path} does not hold a search config")
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(SearchConfig)})
    if unknown:
        raise ConfigError(f"cannot resume: {path} has unknown key(s) {', '.join(unknown)}")
    values = {k: v for k, v in saved.items() if v is not None}
    if isinstance(values.get("objectives"), list):
        values["objectives"] = tuple(values["objectives"])
    return values


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


# -- progress ---------------------------------------------------------------------------------------
class RoundProgress:
    """One line per round: population, front size, best accuracy and its latency/memory."""

    def __init__(self, config: SearchConfig):
        self.config = config
        self.objectives = parse_objectives(config.objectives)
        self.rows: list[dict] = []
        self.latest: dict[str, int] = {}
        self.printed = 0
        self.start = time.time()

    def add(self, trial_id: str, result: dict) -> None:
        keep = ("val_accuracy", "latency_ms", "peak_memory_mb", "params", "feasible", "mutation")
        self.rows.append({k: result.get(k) for k in keep})
        self.latest[trial_id] = result.get("training_iteration", 0)
        while len(self.latest) >= self.config.population and min(self.latest.values()) > self.printed:
            self.printed += 1
            self._print_round(self.printed)

    def _print_round(self, round_: int) -> None:
        feasible = [r for r in self.rows if r["feasible"]]
        front = nondominated_sort(objective_matrix(feasible, self.objectives))[0] if feasible else []
        exploits = sum(1 for r in self.rows if r["mutation"])
        line = f"round {round_}/{self.config.rounds} | population {len(self.latest)} | front {len(front)}"
        if feasible:
            best = max(feasible, key=lambda r: r["val_accuracy"])
            line += (f" | best val acc {best['val_accuracy']:.2%} at {best['latency_ms']:.2f} ms, "
                     f"{best['peak_memory_mb']:.1f} MB, {best['params']:,} params")
        line += f" | exploits {exploits} | {time.time() - self.start:.0f}s"
        print(line, flush=True)  # sys.stdout looked up now: the callback is pickled with the experiment


def search_callback(config: SearchConfig):
    """Records every reported row in ``rows.jsonl`` (appended, so a resumed search keeps the rows of
    the first run) and prints the per-round progress line."""
    from ray import tune

    class _SearchCallback(tune.Callback):
        def __init__(self):
            self.progress = RoundProgress(config)
            self.rows_path = config.experiment_path / ROWS_FILE
            self.state_copies: dict[str, tuple] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if not getattr(self, "tail_checked", False):  # not pickled: checked once per driver process
                # A driver killed mid-write leaves half a line: end it, so resumed rows start on their own.
                if self.rows_path.exists() and not self.rows_path.read_bytes().endswith(b"\n"):
                    with self.rows_path.open("a") as f:
                        f.write("\n")
                self.tail_checked = True
            with self.rows_path.open("a") as f:
                f.write(json.dumps(result, default=str) + "\n")
            self.progress.add(trial.trial_id, result)
            keep_good_state_copies(config.experiment_path, self.state_copies)

        def __getstate__(self):
            return {k: v for k, v in self.__dict__.items() if k != "tail_checked"}

    return _SearchCallback()


# Ray copies its experiment snapshots into the storage path without an atomic rename: a driver killed
# mid-copy leaves the newest empty or cut short, and Tuner.restore would then start the search over.
# The launcher keeps the last copy of each that parsed beside it, and puts it back before --resume.
# Names end in a sortable time. The searcher's file is a pickle despite its name.
RAY_SNAPSHOTS = ("experiment_state-*.json", "basic-variant-state-*.json")
GOOD_COPY = ".last_good"


def keep_good_state_copies(path: Path, copied: dict) -> None:
    for pattern in RAY_SNAPSHOTS:
        newest = max(path.glob(pattern), default=None)
        if newest is None:
            continue
        stat = newest.stat()
        if copied.get(newest.name) == (stat.st_mtime_ns, stat.st_size):
            continue
        data = newest.read_bytes()
        if _parses(data):  # else Ray is writing it right now; the previous copy stays
            tmp = newest.with_name(newest.name + GOOD_COPY + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, newest.with_name(newest.name + GOOD_COPY))
            copied[newest.name] = (stat.st_mtime_ns, stat.st_size)


def restore_cut_short_snapshots(path: Path) -> None:
    """Before ``--resume``: put back the last good copy of a Ray snapshot a killed driver cut short."""
    for pattern in RAY_SNAPSHOTS:
        newest = max(path.glob(pattern), default=None)
        if newest is None or _parses(newest.read_bytes()):
            continue
        good = newest.with_name(newest.name + GOOD_COPY)
        if not good.is_file():
            raise ConfigError(f"cannot resume: Ray's snapshot {newest} is cut short and no good copy was kept")
        tmp = newest.with_name(newest.name + ".tmp")
        tmp.write_bytes(good.read_bytes())
        os.replace(tmp, newest)
        print(f"{newest.name} was cut short when the driver stopped; resuming from its last good copy",
              file=sys.stderr, flush=True)


def _parses(data: bytes) -> bool:
    """Whether a snapshot is complete: JSON that decodes, or a pickle whose opcodes run to STOP
    (walked with pickletools, which builds no objects, so nothing in it runs)."""
    if data.startswith(b"\x80"):
        try:
            return any(opcode.name == "STOP" for opcode, _, _ in pickletools.genops(data))
        except Exception:  # pickletools raises ValueError and others on a cut-short stream
            return False
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


# -- the run ----------------------------------------------------------------------------------------
def start_ray(address: str | None, num_cpus: int | None, num_gpus: float, verbose: int,
              dashboard: bool = False) -> None:
    """Attach to ``address`` or start a local Ray; a Ray already running is kept.

    A local Ray's dashboard is off unless asked for, and then listens on 127.0.0.1 only: it can run
    code on the cluster. (Ray's minimal dashboard process, without the web UI, also binds 127.0.0.1.)
    """
    import ray

    if ray.is_initialized():
        return  # a caller (a test, a notebook) already chose the cluster
    quiet = verbose == 0
    if address:
        from ray.exceptions import AuthenticationError

        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=not quiet, logging_level=logging.WARNING)
        except AuthenticationError:
            raise ConfigError(f"--address {address}: the cluster wants its auth token; set RAY_AUTH_TOKEN or "
                              "RAY_AUTH_TOKEN_PATH, or copy it to ~/.ray/auth_token (see README)") from None
        except ConnectionError as exc:
            raise ConfigError(f"--address {address}: {str(exc).strip().splitlines()[0]}") from None
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus or None, include_dashboard=dashboard,
                 dashboard_host="127.0.0.1", log_to_driver=not quiet, logging_level=logging.WARNING)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A cluster given as HOST:PORT must accept a connection: Ray itself retries one that does not for
    minutes. ("auto" and addresses with a scheme are Ray's to resolve.)"""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: nothing answers there ({exc.strerror or exc})") from None


def check_before_ray(config: SearchConfig, base: Genome) -> None:
    """What can be refused before Ray starts, writing nothing: the storage path, this machine's
    resources when Ray will run locally, and budgets no network of the search could meet."""
    check_storage(config)
    if config.address is None:
        check_machine(config)
    check_budgets(config, base)


def check_storage(config: SearchConfig) -> None:
    path = config.experiment_path
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--storage-path {config.storage_path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--storage-path {config.storage_path}: {existing} is not writable")
    if not config.resume and (path / CONFIG_FILE).exists():
        raise ConfigError(f"experiment {path} already exists: pass --resume to continue it, or another --name")


def check_machine(config: SearchConfig) -> None:
    """A local Ray gets this machine's GPUs and the CPUs asked for: refuse more before starting it."""
    import ray
    import torch

    if ray.is_initialized():
        return  # a Ray the caller started: check_cluster judges it
    gpus = torch.cuda.device_count()
    if config.num_gpus > gpus:
        raise ConfigError(f"--num-gpus {config.num_gpus:g} exceeds the {gpus} GPU(s) of this machine")
    cpus = config.num_cpus or os.cpu_count() or 1
    if config.cpus_per_trial > cpus:
        raise ConfigError(f"--cpus-per-trial {config.cpus_per_trial:g} exceeds the local Ray's {cpus} CPUs")
    if config.trial_gpus > (config.num_gpus or gpus):
        raise ConfigError(f"--gpus-per-trial {config.trial_gpus:g} exceeds the {config.num_gpus or gpus:g} GPU(s) "
                          "the local Ray would have")
    if config.dashboard:
        try:
            import ray.dashboard.optional_deps  # noqa: F401  (what Ray itself checks before starting it)
        except ImportError as exc:
            raise ConfigError(f"--dashboard needs Ray's dashboard packages (pip install 'ray[default]'): "
                              f"{exc}") from None


def check_budgets(config: SearchConfig, base: Genome) -> None:
    """Refuse a budget that not even the smallest network the search can reach meets: ``base`` with
    the identity alone on every edge (pruning keeps one operation per edge, splits only add).

    Memory: the bytes a training step of that network holds at the least (``training_memory_floor``,
    counted, so the same on any device). Latency is timed here only when the trials run on this
    machine's CPU (local Ray, no GPU), with a trial's thread count; elsewhere the driver cannot time
    what the trials will see.
    """
    import torch

    from spidernet_ray.hardware import measure_latency, training_memory_floor
    from spidernet_ray.supernet import DiscreteNet
    from spidernet_ray.train import TRAINING_LAYOUT

    if not config.budgets:
        return
    if config.macro_mutations:  # clones may drop cells and narrow the channels, down to one of each
        base = initial_genome(base.input_shape, base.num_classes, reductions=0, channels=1)
    identity = {(k, e.src, e.dst): ("identity",) for k, cell in enumerate(base.cells) for e in cell.edges}
    smallest = DiscreteNet(base, identity).to(memory_format=TRAINING_LAYOUT)  # as networks are measured
    if config.memory_budget_mb is not None:
        floor = training_memory_floor(smallest, base.input_shape, config.batch_size)
        if config.memory_budget_mb < floor:
            raise ConfigError(f"--memory-budget-mb {config.memory_budget_mb:g} is below the {floor:.3f} MB that the "
                              f"smallest possible network needs for a training step of batch {config.batch_size}")
    if config.latency_budget_ms is not None and config.address is None and config.trial_gpus == 0:
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(config.cpus_per_trial)))
        try:
            floor, _ = measure_latency(smallest, base.input_shape, config.latency_batch_size, "cpu")
        finally:
            torch.set_num_threads(threads)
        if config.latency_budget_ms < floor:
            raise ConfigError(f"--latency-budget-ms {config.latency_budget_ms:g} is below the {floor:.3f} ms the "
                              f"smallest possible network takes here (batch {config.latency_batch_size})")


def check_cluster(config: SearchConfig) -> None:
    import ray

    have = ray.cluster_resources()
    if config.num_gpus > have.get("GPU", 0):
        raise ConfigError(f"--num-gpus {config.num_gpus:g} exceeds the cluster's {have.get('GPU', 0):g} GPUs")
    if config.cpus_per_trial > have.get("CPU", 0):
        raise ConfigError(f"--cpus-per-trial {config.cpus_per_trial:g} exceeds the cluster's {have.get('CPU', 0):g} CPUs")
    if config.trial_gpus > have.get("GPU", 0):  # no member could ever be placed: refuse rather than hang
        raise ConfigError(f"--gpus-per-trial {config.trial_gpus:g} exceeds the cluster's {have.get('GPU', 0):g} GPUs")


def strategy_trainable(strategy: str) -> type:
    """The trainable class of a strategy (see ``spidernet_ray.baselines`` for the two baselines)."""
    from spidernet_ray import baselines, trainable

    classes = {"spidernet": trainable.SpiderNetTrainable, "random": baselines.RandomSearchTrainable,
               "random_asha": baselines.RandomSearchTrainable, "pbt": baselines.StockPBTTrainable}
    return classes[strategy]


def strategy_scheduler(config: SearchConfig, path: Path):
    """The search's Pareto scheduler; none (Tune's FIFO) for random search; Ray's own ASHAScheduler
    (successive halving on val accuracy, every round a rung candidate) for random search with early
    stopping; Ray's own PopulationBasedTraining over lr and weight decay for the pbt baseline."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    from spidernet_ray import scheduler

    mutations = {
        "lr": tune.loguniform(config.lr / 4, config.lr * 4),
        "weight_decay": tune.loguniform(config.weight_decay / 10, config.weight_decay * 10),
    }
    if config.strategy == "random":
        return None
    if config.strategy == "random_asha":
        return ASHAScheduler(time_attr="training_iteration", metric="val_accuracy", mode="max", max_t=config.rounds,
                             grace_period=1, reduction_factor=2)
    if config.strategy == "pbt":
        return PopulationBasedTraining(time_attr="training_iteration", metric="val_accuracy", mode="max",
                                       perturbation_interval=1, quantile_fraction=config.quantile_fraction,
                                       hyperparam_mutations=mutations)
    return scheduler.SpiderNetScheduler(
        objectives=config.objectives,
        budgets=config.budgets,
        state_path=path / STATE_FILE,
        quantile_fraction=config.quantile_fraction,
        hyperparam_mutations={**mutations, "drop_path": tune.uniform(0.0, 0.3)},
        macro_probability=config.macro_probability if config.macro_mutations else 0.0,
        crossover_probability=config.crossover_probability if config.crossover else 0.0,
        seed=config.seed,
    )


# Random search under a time budget samples members until the budget ends it; this only bounds the count.
UNBOUNDED_SAMPLES = 100_000


def strategy_samples(config: SearchConfig) -> int:
    """Members Tune samples. A population for the search and stock PBT. Random search keeps sampling new
    architectures, ``population`` at a time, as members finish (random) or ASHA stops them (random_asha):
    until the time budget ends the run when there is one, else up to population x rounds for random_asha
    (at least the search's trial-rounds, most members being stopped after a round or two) and the
    population alone for random (each member trains every round)."""
    if config.strategy not in ("random", "random_asha"):
        return config.population
    if config.time_budget_s is not None:
        return UNBOUNDED_SAMPLES
    return config.population * config.rounds if config.strategy == "random_asha" else config.population


def run(config: SearchConfig) -> int:
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from spidernet_ray import results
    from spidernet_ray.trainable import param_space

    splits = load_dataset(config.dataset, config.data_root, seed=config.seed, val_fraction=config.val_fraction,
                          subset=config.subset, download=config.download)
    base = initial_genome(splits.input_shape, splits.num_classes, config.reductions, config.channels)  # fits?
    start = None
    if config.genome and not config.resume:
        start = base = read_genome_file(config.genome)
        if (start.input_shape, start.num_classes) != (splits.input_shape, splits.num_classes):
            raise GenomeError(f"{config.genome} is a genome for inputs {start.input_shape} and {start.num_classes} "
                              f"classes; {config.dataset} has {splits.input_shape} and {splits.num_classes}")
    check_before_ray(config, base)
    if config.resume:
        restore_cut_short_snapshots(config.experiment_path)
    start_ray(config.address, config.num_cpus, config.num_gpus, config.verbose, config.dashboard)
    check_cluster(config)  # an attached cluster can only be judged once connected (nothing written yet)
    if config.verbose == 0:
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        # Ray's storage sync warns about files a paused trial has not written yet: noise for users.
        logging.getLogger("ray.tune.logger").setLevel(logging.ERROR)
    path = config.experiment_path
    trainable = tune.with_resources(
        tune.with_parameters(strategy_trainable(config.strategy), splits=splits),
        {"cpu": config.cpus_per_trial, "gpu": config.trial_gpus},
    )
    if config.resume:
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=1))
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(config, start),
            tune_config=tune.TuneConfig(
                scheduler=strategy_scheduler(config, path),
                num_samples=strategy_samples(config),
                time_budget_s=config.time_budget_s,
                reuse_actors=True,
                # At most a population of members at a time, however many random search samples in turn.
                search_alg=BasicVariantGenerator(random_state=config.seed, max_concurrent=config.population),
            ),
            run_config=tune.RunConfig(
                name=config.name,
                storage_path=str(path.parent),
                stop={"training_iteration": config.rounds},
                checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=4),
                failure_config=tune.FailureConfig(max_failures=3),
                callbacks=[search_callback(config)],
                verbose=config.verbose,
            ),
        )
    print(f"searching: {config.population} members x {config.rounds} rounds on {config.dataset} -> {path}",
          flush=True)
    grid = tuner.fit()
    summary = results.write_results(path, config.objectives, config.budgets)
    print(summary.table_markdown)
    print(f"results: {path}")
    errors = [r.error for r in grid if r.error]
    if errors:
        print(f"{len(errors)} trial(s) ended with an error; see {path}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(resolve_config(args))
    except (ConfigError, DataError, GenomeError) as exc:
        print(f"spidernet_ray.launch: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
