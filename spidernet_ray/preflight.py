"""Checks that refuse a run before Ray starts (or, for an attached cluster, right after it connects),
writing nothing: the storage path, this machine's or the cluster's resources, and budgets no network
of the search could meet. Each failure is a ``ConfigError`` the command line prints in one line."""

from __future__ import annotations

import os
import socket
import tempfile

from spidernet_ray.config import ConfigError, SearchConfig
from spidernet_ray.genome import Genome, initial_genome
from spidernet_ray.rundir import CONFIG_FILE


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
    """The run directory must be creatable: its nearest existing ancestor a folder we can write in.
    Permission bits do not tell (root passes ``os.access`` on /proc and on read-only file systems),
    so a temporary folder is made there and removed at once."""
    path = config.experiment_path
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--storage-path {config.storage_path}: {existing} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".spidernet-write-check-"))
    except OSError as exc:
        raise ConfigError(f"--storage-path {config.storage_path}: cannot write in {existing} "
                          f"({exc.strerror or exc.__class__.__name__})") from None
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
