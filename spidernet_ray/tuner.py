"""The one entry point from a run description to Ray Tune: ``build_tuner`` makes the Tuner of a config's
strategy (spidernet_ray.strategies), ``run_search`` runs it and writes the results. The launcher, the
benchmarks and a notebook all go through here.

    config = SearchConfig(population=4, rounds=6).validate()
    code = run_search(config)  # results in config.experiment_path
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence

from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from spidernet_ray import results
from spidernet_ray.config import ConfigError, SearchConfig, read_genome_file, write_run_config
from spidernet_ray.costmodel import CostModel, measure_cost_model
from spidernet_ray.data import DataSplits, load_dataset
from spidernet_ray.genome import Genome, GenomeError, initial_genome
from spidernet_ray.preflight import check_before_ray, check_cluster, check_reachable
from spidernet_ray.progress import native_output_dropped, search_callback, search_output
from spidernet_ray.rundir import COST_MODEL_FILE, FRONT_CHECK_FILE, atomic_write_text, restore_cut_short_snapshots
from spidernet_ray.strategies import build_strategy
from spidernet_ray.trainable import param_space

def start_ray(address: str | None, num_cpus: int | None, num_gpus: float, verbose: int,
              dashboard: bool = False) -> None:
    """Attach to ``address`` or start a local Ray; a Ray already running is kept.

    A local Ray's dashboard is off unless asked for, and then listens on 127.0.0.1 only: it can run
    code on the cluster. (Ray's minimal dashboard process, without the web UI, also binds 127.0.0.1.)
    What the workers print reaches this terminal from ``verbose`` 1; Ray's info logs from 2.
    """
    import ray

    if ray.is_initialized():
        return  # a caller (a test, a notebook) already chose the cluster
    quiet = verbose == 0
    level = logging.INFO if verbose >= 2 else logging.WARNING
    if address:
        from ray.exceptions import AuthenticationError

        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=not quiet, logging_level=level)
        except AuthenticationError:
            raise ConfigError(f"--address {address}: the cluster wants its auth token; set RAY_AUTH_TOKEN or "
                              "RAY_AUTH_TOKEN_PATH, or copy it to ~/.ray/auth_token (see README)") from None
        except ConnectionError as exc:
            raise ConfigError(f"--address {address}: {str(exc).strip().splitlines()[0]}") from None
    else:
        # Ray turns token authentication on for a new local cluster and warns so on every launch; the
        # protection stays, the warning (nothing for a local user to do) goes. The README explains it.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus or None, include_dashboard=dashboard,
                 dashboard_host="127.0.0.1", log_to_driver=not quiet, logging_level=level)


TRACKERS = {  # --tracking -> (package it needs, Ray Tune's callback for it)
    "mlflow": ("mlflow", "ray.air.integrations.mlflow.MLflowLoggerCallback"),
    "wandb": ("wandb", "ray.air.integrations.wandb.WandbLoggerCallback"),
}


def tracking_callbacks(config: SearchConfig) -> list[tune.Callback]:
    """Ray Tune's own logger callback for ``--tracking`` (none without it); ConfigError, before anything is
    written, when its package is missing. MLflow logs under ``RUN/mlruns`` unless MLFLOW_TRACKING_URI is set;
    W&B reads its usual environment (WANDB_API_KEY, WANDB_MODE=offline)."""
    if config.tracking is None:
        return []
    package, target = TRACKERS[config.tracking]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"--tracking {config.tracking} needs the package {package}: "
                          f"pip install 'spidernet_ray[{config.tracking}]'")
    module, name = target.rsplit(".", 1)
    callback = getattr(importlib.import_module(module), name)
    project = config.experiment_path.name
    if config.tracking == "mlflow":
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (config.experiment_path / "mlruns").as_uri()
        return [callback(tracking_uri=uri, experiment_name=project)]
    return [callback(project=project)]


# -- measure once ----------------------------------------------------------------------------------
def on_quiet_device(config: SearchConfig, function, *args):
    """``function(*args, device, threads)`` run where it has the members' device to itself, before they
    start or after they end, with the CPU threads a member uses: here when the members train on this
    machine's CPU (a local Ray, no GPUs: no worker to start), else in a Ray task holding a whole GPU
    when members get GPUs."""
    import ray

    threads = max(1, int(config.cpus_per_trial))
    if config.address is None and config.trial_gpus == 0:
        with native_output_dropped():
            return function(*args, "cpu", threads)
    gpus = min(1.0, ray.cluster_resources().get("GPU", 0)) if config.trial_gpus > 0 else 0

    def remote(*args):
        import torch

        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        return function(*args, device, threads)

    return ray.get(ray.remote(remote).options(num_cpus=threads, num_gpus=gpus).remote(*args))


def _measure_cost_model(dense: Genome, config: SearchConfig, device: str, threads: int) -> CostModel:
    return measure_cost_model(dense, config.batch_size, config.latency_batch_size, device, threads, seed=config.seed)


def run_cost_model(config: SearchConfig, splits: DataSplits, start_genome: Genome | None = None) -> CostModel:
    """The run's cost model (``costmodel``): read from the run directory when there is one (a resumed
    search), else measured now with the device to itself (``on_quiet_device``), and stored."""
    path = config.experiment_path / COST_MODEL_FILE
    if path.exists():
        return CostModel.from_json(path.read_text())
    base = start_genome or initial_genome(splits.input_shape, splits.num_classes, config.reductions, config.channels)
    dense = initial_genome(base.input_shape, base.num_classes, base.reductions, base.channels)
    model = on_quiet_device(config, _measure_cost_model, dense, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, model.to_json())
    return model


def _measure_networks(genomes: list[str], config: SearchConfig, device: str, threads: int) -> list[dict]:
    import torch

    from spidernet_ray.hardware import measure
    from spidernet_ray.supernet import DiscreteNet
    from spidernet_ray.train import TRAINING_LAYOUT

    previous, measured = torch.get_num_threads(), []
    torch.set_num_threads(threads)
    try:
        for text in genomes:
            genome = Genome.from_json(text)
            net = DiscreteNet(genome).to(memory_format=TRAINING_LAYOUT)  # as the members train
            measured.append(measure(net, genome.input_shape, config.batch_size, device,
                                    latency_batch_size=config.latency_batch_size, disposable=True).to_dict())
    finally:
        torch.set_num_threads(previous)
    return measured


def check_front(config: SearchConfig) -> dict | None:
    """Measure the final front's networks for real, once the members are done (the device is quiet),
    against the estimates the search ranked them on; written to the run directory. None when the front's
    figures were measured already (``--measure-every-round``) or there is no front."""
    path = config.experiment_path
    rows = results.read_rows(path)
    front = results.pareto_front(rows + results.snapshot_rows(rows), config.objectives, config.budgets)
    estimated = list({e["genome_hash"]: e for e in front if e.get("estimated") and e.get("genome")}.values())
    if not estimated:
        return None
    measured = on_quiet_device(config, _measure_networks, [e["genome"] for e in estimated], config)
    check = results.front_check(estimated, measured, device=measured[0]["device"],
                                threads=max(1, int(config.cpus_per_trial)))
    atomic_write_text(path / FRONT_CHECK_FILE, json.dumps(check, indent=1))
    return check


def ray_verbosity(verbose: int) -> int:
    """Ray Tune's own verbosity for our ``--verbose``: each level adds to the one below.
    0: our round and member progress only; 1: also what the members print and Ray's warnings (the
    profiler's and checkpoints' chatter dropped, progress.WORKER_NOISE); 2: also Ray's trial table and
    logs (Ray's verbose 1); 3: also every result Ray hears (Ray's verbose 2)."""
    return min(max(verbose - 1, 0), 2)


@contextlib.contextmanager
def rays_console(verbosity: int):
    """Ray Tune's console output at ``verbosity`` while a fit runs. Ray 2.x's console engine prints its
    "Configuration for experiment" box and "View detailed results here" even at verbosity 0; its
    documented switch to the former engine (RAY_AIR_NEW_OUTPUT=0), silent at 0, is set for the fit only."""
    if verbosity > 0 or "RAY_AIR_NEW_OUTPUT" in os.environ:  # a user's own choice stands
        yield
        return
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        os.environ.pop("RAY_AIR_NEW_OUTPUT", None)


def build_tuner(config: SearchConfig, splits: DataSplits, start_genome: Genome | None = None,
                callbacks: Sequence[tune.Callback] = ()) -> tune.Tuner:
    """The Tuner of ``config``'s strategy on ``splits`` (on ``--resume``, the stopped one restored).
    ``start_genome`` replaces the initial genome of every member; ``callbacks`` join the search's own.
    Starts a local Ray unless one runs, and measures the run's cost model unless the run has one."""
    start_ray(config.address, config.num_cpus, config.num_gpus, config.verbose, config.dashboard)
    path = config.experiment_path
    strategy = build_strategy(config, path)
    cost_model = run_cost_model(config, splits, start_genome)
    trainable = tune.with_resources(tune.with_parameters(strategy.trainable, splits=splits, cost_model=cost_model),
                                    {"cpu": config.cpus_per_trial, "gpu": config.trial_gpus})
    if config.resume:
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space(config, start_genome),
        tune_config=tune.TuneConfig(
            scheduler=strategy.scheduler,
            num_samples=strategy.samples or config.population,
            time_budget_s=config.time_budget_s,
            reuse_actors=True,
            search_alg=BasicVariantGenerator(random_state=config.seed, max_concurrent=config.population),
        ),
        run_config=tune.RunConfig(
            name=config.name,
            storage_path=str(path.parent),
            stop={"training_iteration": config.rounds},
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=4),
            failure_config=tune.FailureConfig(max_failures=3),
            callbacks=[search_callback(config, strategy.scheduler), *callbacks],
            verbose=ray_verbosity(config.verbose),
        ),
    )


def run_search(config: SearchConfig, callbacks: Sequence[tune.Callback] = ()) -> int:
    """Check, start Ray, search, write the results (``results.write_results``); 0 when every member
    finished, 1 when some ended with an error. Bad input raises ConfigError, DataError or GenomeError
    before anything is written."""
    splits = load_dataset(config.dataset, config.data_root, seed=config.seed, val_fraction=config.val_fraction,
                          subset=config.subset, download=config.download)
    base = initial_genome(splits.input_shape, splits.num_classes, config.reductions, config.channels)
    start = None
    if config.genome and not config.resume:
        start = base = read_genome_file(config.genome)
        if (start.input_shape, start.num_classes) != (splits.input_shape, splits.num_classes):
            raise GenomeError(f"{config.genome} is a genome for inputs {start.input_shape} and {start.num_classes} "
                              f"classes; {config.dataset} has {splits.input_shape} and {splits.num_classes}")
    check_before_ray(config, base)
    callbacks = [*tracking_callbacks(config), *callbacks]
    if config.resume:
        restore_cut_short_snapshots(config.experiment_path)
    start_ray(config.address, config.num_cpus, config.num_gpus, config.verbose, config.dashboard)
    check_cluster(config)  # an attached cluster can only be judged once connected (nothing written yet)
    if config.verbose < 2:
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        # Ray's storage sync warns about files a paused trial has not written yet: noise for users.
        logging.getLogger("ray.tune.logger").setLevel(logging.ERROR)
    if config.verbose == 0:
        # Tune warns when a driver step takes over 0.5 s; ranking a population and keeping checkpoint
        # copies can, by design, and the warning gives a user nothing to act on.
        logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    path = config.experiment_path
    if not config.resume:
        path.mkdir(parents=True, exist_ok=True)
        write_run_config(config)
    tuner = build_tuner(config, splits, start, callbacks)
    print(f"searching: {config.population} members x {config.rounds} rounds on {config.dataset} -> {path}",
          flush=True)
    print(f"TensorBoard: tensorboard --logdir {path}", flush=True)
    with search_output(config.verbose), rays_console(ray_verbosity(config.verbose)):
        grid = tuner.fit()
    check_front(config)
    summary = results.write_results(path, config.objectives, config.budgets)
    print(summary.table_markdown)
    if summary.warning:
        print(summary.warning)
    print(f"results: {path}")
    errors = [r.error for r in grid if r.error]
    if errors:
        print(f"{len(errors)} trial(s) ended with an error; see {path}", file=sys.stderr)
        return 1
    return 0
