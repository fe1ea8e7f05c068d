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
import sys
import time
from pathlib import Path

from spidernet_ray.config import ConfigError, SearchConfig, build_config, read_config_file
from spidernet_ray.data import DataError, list_datasets, load_dataset
from spidernet_ray.genome import GenomeError, initial_genome
from spidernet_ray.pareto import nondominated_sort, objective_matrix, parse_objectives
from spidernet_ray.results import ROWS_FILE

CONFIG_FILE = "search_config.json"
STATE_FILE = "scheduler_state.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m spidernet_ray.launch", description=__doc__.splitlines()[0],
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
    p.add_argument("--val-fraction", type=float, help="share of the training data held out for validation")
    p.add_argument("--quantile-fraction", type=float, help="share of the population cloned over / cloned from")
    p.add_argument("--latency-batch-size", type=int, help="batch size of the latency measurement (default 1)")
    p.add_argument("--latency-budget-ms", type=float)
    p.add_argument("--memory-budget-mb", type=float)
    p.add_argument("--objectives", nargs="+", help="e.g. max:val_accuracy min:latency_ms min:peak_memory_mb")
    p.add_argument("--strategy", help="spidernet")
    p.add_argument("--storage-path")
    p.add_argument("--name", help="experiment name (default: strategy-dataset-timestamp)")
    p.add_argument("--resume", action="store_true", default=None, help="continue the experiment --name")
    p.add_argument("--seed", type=int)
    p.add_argument("--verbose", type=int, help="1 or 2: show Ray's own progress table and logs")
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> SearchConfig:
    flags = {k: v for k, v in vars(args).items() if k != "config"}
    if flags.get("objectives") is not None:
        flags["objectives"] = tuple(flags["objectives"])
    file_values = read_config_file(args.config) if args.config else {}
    if flags.get("resume"):
        merged = build_config(file_values, flags)  # validates the flags and finds the experiment
        saved = merged.experiment_path / CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(f"nothing to resume: {saved} does not exist")
        saved_values = {k: v for k, v in json.loads(saved.read_text()).items() if v is not None}
        file_values = {**saved_values, **file_values}
        file_values["objectives"] = tuple(file_values["objectives"])
    return build_config(file_values, flags)


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
            # A driver killed mid-write leaves half a line: end it, so resumed rows start on their own.
            if self.rows_path.exists() and not self.rows_path.read_bytes().endswith(b"\n"):
                with self.rows_path.open("a") as f:
                    f.write("\n")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            with self.rows_path.open("a") as f:
                f.write(json.dumps(result, default=str) + "\n")
            self.progress.add(trial.trial_id, result)

    return _SearchCallback()


# -- the run ----------------------------------------------------------------------------------------
def start_ray(address: str | None, num_cpus: int | None, num_gpus: float, verbose: int) -> None:
    """Attach to ``address`` or start a local Ray (no dashboard); a Ray already running is kept."""
    import ray

    if ray.is_initialized():
        return  # a caller (a test, a notebook) already chose the cluster
    quiet = verbose == 0
    if address:
        ray.init(address=address, log_to_driver=not quiet, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus or None, include_dashboard=False,
                 log_to_driver=not quiet, logging_level=logging.WARNING)


def check_cluster(config: SearchConfig) -> None:
    import ray

    have = ray.cluster_resources()
    if config.num_gpus > have.get("GPU", 0):
        raise ConfigError(f"--num-gpus {config.num_gpus:g} exceeds the cluster's {have.get('GPU', 0):g} GPUs")
    if config.cpus_per_trial > have.get("CPU", 0):
        raise ConfigError(f"--cpus-per-trial {config.cpus_per_trial:g} exceeds the cluster's {have.get('CPU', 0):g} CPUs")


def run(config: SearchConfig) -> int:
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from spidernet_ray import results
    from spidernet_ray.scheduler import SpiderNetScheduler
    from spidernet_ray.trainable import SpiderNetTrainable, param_space

    splits = load_dataset(config.dataset, config.data_root, seed=config.seed, val_fraction=config.val_fraction,
                          subset=config.subset, download=config.download)
    initial_genome(splits.input_shape, splits.num_classes, config.reductions, config.channels)  # fits the data?
    start_ray(config.address, config.num_cpus, config.num_gpus, config.verbose)
    check_cluster(config)
    if config.verbose == 0:
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        # Ray's storage sync warns about files a paused trial has not written yet: noise for users.
        logging.getLogger("ray.tune.logger").setLevel(logging.ERROR)
    path = config.experiment_path
    trainable = tune.with_resources(
        tune.with_parameters(SpiderNetTrainable, splits=splits),
        {"cpu": config.cpus_per_trial, "gpu": config.trial_gpus},
    )
    if config.resume:
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=1))
        scheduler = SpiderNetScheduler(
            objectives=config.objectives,
            budgets=config.budgets,
            state_path=path / STATE_FILE,
            quantile_fraction=config.quantile_fraction,
            hyperparam_mutations={
                "lr": tune.loguniform(config.lr / 4, config.lr * 4),
                "weight_decay": tune.loguniform(config.weight_decay / 10, config.weight_decay * 10),
                "drop_path": tune.uniform(0.0, 0.3),
            },
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(config),
            tune_config=tune.TuneConfig(
                scheduler=scheduler,
                num_samples=config.population,
                reuse_actors=True,
                search_alg=BasicVariantGenerator(random_state=config.seed),
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
