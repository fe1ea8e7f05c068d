"""Orchestration overhead of a SpiderNet search against Ray Tune's stock PBT, on one workload, in one run.

    overhead = 1 - (CPU seconds inside train_epoch, summed over trials) / (wall seconds x CPUs in use)

Everything that is not ``train_epoch`` counts as overhead: actor start-up and reuse, pausing,
exploits, checkpoints, scheduling, proxies, evaluation, hardware measurement. Training is counted in
CPU seconds of the actor thread that runs it (``time.thread_time``; torch runs one intra-op thread per
member), so time a member waits for a CPU another process holds is not counted as training. The arms run the same population on the
same CPUs for the same rounds (one Tune step = one round), one after the other on one local Ray:

* spidernet: ``tuner.run_search`` on a ``SearchConfig`` (``SpiderNetTrainable`` + ``SpiderNetScheduler``)
  with the product's defaults: one CPU per member, so members take turns (Tune pauses, checkpoints and
  restores them every round), and each round's latency and memory are estimated from the run's cost
  model; train seconds are summed from the run's ``trials.parquet``.
* spidernet_shared: the same with the CPUs shared (CPUs / population each, one intra-op thread), so
  every member trains at once and none is paused except to be cloned over (``--cpus-per-trial 0.25``).
* stock_pbt, stock_pbt_shared: ``StockTrainable`` below - one fixed network for every member (the
  starting supernet of seed 0, never pruned or grown), the same data, ``train_epoch``, ``evaluate`` and
  safetensors checkpoints - under Ray's own ``PopulationBasedTraining`` perturbing lr and
  weight_decay, with the same Tuner settings (reuse_actors, a checkpoint every round, 4 kept), taking
  turns or sharing the CPUs; the better of the two is the figure to beat.
* *_at_cpus: both again with population = CPUs, one CPU each: no sharing and no turns at all.

Wall seconds are those of ``Tuner.fit()``. The search also measures its cost model once before
``fit`` and its final front once after it; those seconds are reported beside the figure (and in a
second overhead figure that counts them), since they do not grow with the search's length. To say where the overhead goes, every arm runs with the
same thin probes: the trainable class is subclassed to time Ray's entry points into the actor
(``__init__``, ``train``, ``save``, ``restore``, ``reset``; one JSON line per call), and the scheduler
is subclassed to time its driver-side hooks. Both arms run through ``spidernet_ray.tuner`` as strategies
this script registers (``spidernet_probed``, ``stock_probed``): the product's strategies with the probed
classes. Writes results/overhead.json and results/overhead.md.

    python benchmarks/overhead.py [--population 8] [--cpus 2] [--rounds 6] [--step-seconds 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import ray
import torch
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

from spidernet_ray import checkpoint as ckpt
from spidernet_ray import train as loop  # loop.TRAINING_LAYOUT: a torch.memory_format does not pickle by value
from spidernet_ray.config import ConfigError, SearchConfig
from spidernet_ray.data import DataSplits, load_dataset, make_loaders
from spidernet_ray.rundir import TRIALS_FILE
from spidernet_ray.strategies import Strategy, register_strategy, spidernet_scheduler, stock_pbt_scheduler
from spidernet_ray.supernet import SuperNet
from spidernet_ray.train import evaluate, make_optimizer, train_epoch
from spidernet_ray.trainable import SpiderNetTrainable, Stopwatch, seeded_start
from spidernet_ray import tuner
from spidernet_ray.tuner import build_tuner, run_search
from provenance import code_version  # benchmarks/provenance.py, beside this script

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.05
PHASES = ("init", "train", "save", "restore", "reset")  # Ray's entry points into a trainable actor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--step-seconds", type=float, default=2.0, help="training seconds per step to aim for")
    p.add_argument("--subset", type=int, help="training examples (default: calibrated to --step-seconds)")
    p.add_argument("--epochs-per-round", type=int, default=1)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="pairs of runs; the order alternates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the runs' temporary directories")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to run (default: all)")
    return p.parse_args(argv)


# -- the workload -------------------------------------------------------------------------------------
def calibrate_subset(config: SearchConfig, step_seconds: float) -> tuple[int, float]:
    """(training examples, seconds per batch) for about ``step_seconds`` of ``train_epoch`` per round.

    Times ten batches of the starting supernet with one thread (a trial's share), here and now, so the
    steps of the run last about as long under the machine's present load.
    """
    splits = load_dataset(config.dataset, config.data_root, seed=config.seed, val_fraction=config.val_fraction)
    settings = config
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(config.seed)
        model = SuperNet(seeded_start(splits, settings, seed=0), gate=config.gate, window=config.deadhead_window,
                         channel_search=config.channel_search)
        model.to(memory_format=loop.TRAINING_LAYOUT)  # as a member trains
        optimizer = make_optimizer(model, config.lr, config.weight_decay, config.momentum)
        batches = list(itertools.islice(make_loaders(splits, config.batch_size, seed=config.seed).train, 10))
        per_batch = []
        for _ in range(3):
            start = time.perf_counter()
            train_epoch(model, optimizer, batches)
            per_batch.append((time.perf_counter() - start) / len(batches))
    finally:
        torch.set_num_threads(threads)
    seconds = statistics.median(per_batch)
    wanted = max(2, round(step_seconds / config.epochs_per_round / seconds))
    subset = math.ceil(wanted * config.batch_size / (1 - config.val_fraction)) + 1
    return min(subset, len(splits.y_train) + len(splits.y_val)), seconds


# -- probes -------------------------------------------------------------------------------------
def _record(log_dir: str, phase: str, start: float, seconds: float, cpu: float) -> None:
    line = json.dumps({"phase": phase, "start": start, "seconds": seconds, "cpu": cpu, "pid": os.getpid()})
    with open(os.path.join(log_dir, f"{os.getpid()}.jsonl"), "a") as f:
        f.write(line + "\n")


def probed(trainable_cls: type, log_dir: str) -> type:
    """``trainable_cls`` with every call Ray makes into the actor timed into ``log_dir`` (one file per process)."""

    class Probed(trainable_cls):
        def __init__(self, *args, **kwargs):  # process already started: Trainable init + setup
            start, t, cpu = time.time(), time.perf_counter(), time.thread_time()
            super().__init__(*args, **kwargs)
            _record(log_dir, "init", start, time.perf_counter() - t, time.thread_time() - cpu)

        def train(self):
            start, t, cpu = time.time(), time.perf_counter(), time.thread_time()
            result = super().train()
            _record(log_dir, "train", start, time.perf_counter() - t, time.thread_time() - cpu)
            return result

        def save(self, *args, **kwargs):
            start, t, cpu = time.time(), time.perf_counter(), time.thread_time()
            result = super().save(*args, **kwargs)
            _record(log_dir, "save", start, time.perf_counter() - t, time.thread_time() - cpu)
            return result

        def restore(self, *args, **kwargs):
            start, t, cpu = time.time(), time.perf_counter(), time.thread_time()
            result = super().restore(*args, **kwargs)
            _record(log_dir, "restore", start, time.perf_counter() - t, time.thread_time() - cpu)
            return result

        def reset(self, *args, **kwargs):
            start, t, cpu = time.time(), time.perf_counter(), time.thread_time()
            result = super().reset(*args, **kwargs)
            _record(log_dir, "reset", start, time.perf_counter() - t, time.thread_time() - cpu)
            return result

    Probed.__name__ = Probed.__qualname__ = trainable_cls.__name__
    return Probed


def read_probes(log_dir: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(log_dir.glob("*.jsonl")) for line in path.read_text().splitlines()]


# Driver-side seconds and counts of the probed schedulers, by arm (the scheduler lives in this process).
DRIVER: dict[str, dict[str, float]] = {}


def timed_scheduler(scheduler_cls: type, arm: str) -> type:
    """``scheduler_cls`` with its per-result and pick-next-trial hooks timed and exploits counted."""
    stats = DRIVER.setdefault(arm, {"scheduler_seconds": 0.0, "scheduler_calls": 0, "exploits": 0})

    class Timed(scheduler_cls):
        def on_trial_result(self, tune_controller, trial, result):
            t = time.perf_counter()
            try:
                return super().on_trial_result(tune_controller, trial, result)
            finally:
                stats["scheduler_seconds"] += time.perf_counter() - t
                stats["scheduler_calls"] += 1

        def choose_trial_to_run(self, tune_controller):
            t = time.perf_counter()
            try:
                return super().choose_trial_to_run(tune_controller)
            finally:
                stats["scheduler_seconds"] += time.perf_counter() - t

        def _exploit(self, tune_controller, trial, trial_to_clone):
            stats["exploits"] += 1
            super()._exploit(tune_controller, trial, trial_to_clone)

    Timed.__name__ = Timed.__qualname__ = scheduler_cls.__name__
    return Timed


@contextlib.contextmanager
def timed_fit(clock: dict):
    """Times every ``Tuner.fit()`` in the block into ``clock``: wall seconds and this process's CPU seconds."""
    original = tune.Tuner.fit

    def fit(tuner):
        cpu, t = _own_cpu_seconds(), time.perf_counter()
        daemons = ray_daemon_cpu_seconds()
        clock["fit_start"] = time.time()
        try:
            return original(tuner)
        finally:
            clock["fit_end"] = time.time()
            clock["fit_seconds"] = time.perf_counter() - t
            clock["driver_cpu_seconds"] = _own_cpu_seconds() - cpu
            clock["ray_daemon_cpu_seconds"] = ray_daemon_cpu_seconds() - daemons

    tune.Tuner.fit = fit
    try:
        yield clock
    finally:
        tune.Tuner.fit = original


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ray_daemon_cpu_seconds() -> float:
    """CPU seconds so far of this driver's Ray processes other than workers (GCS, raylet, agents):
    they share the CPUs with the training. Read from /proc; 0 where there is none."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, cpu, workers = {}, {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if b"default_worker.py" in cmdline or cmdline.startswith(b"ray::"):
            workers.add(pid)
    me, total = os.getpid(), 0.0
    for pid in cpu:
        ancestor = parents.get(pid)
        while ancestor and ancestor != me:
            ancestor = parents.get(ancestor)
        if ancestor == me and pid not in workers:
            total += cpu[pid]
    return total


# -- stock PBT's arm ------------------------------------------------------------------------------
class StockTrainable(SpiderNetTrainable):
    """One fixed network per member: the starting supernet of seed 0 (no pressure, no pruning, no
    growth), trained with the same loop on the same data; lr and weight_decay come from PBT.
    Set-up and actor reuse are the search trainable's own."""

    def build_member(self, config: dict) -> SuperNet:
        genome = seeded_start(self.splits, self.settings, seed=0)  # one architecture for every member
        return SuperNet(genome, gate=self.settings.gate, window=self.settings.deadhead_window).to(
            self.device, memory_format=loop.TRAINING_LAYOUT)  # as the search's members train

    def step(self) -> dict:
        train, evaluation = Stopwatch(), Stopwatch()
        for _ in range(self.settings.epochs_per_round):
            with train:
                loss = train_epoch(self.model, self.optimizer, self.loaders.train)
        with evaluation:
            val_accuracy, val_loss = evaluate(self.model, self.loaders.val)
        return {"val_accuracy": val_accuracy, "val_loss": val_loss, "train_loss": loss,
                **train.fields("train"), **evaluation.fields("eval"),
                "lr": self.config["lr"], "weight_decay": self.config["weight_decay"]}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        ckpt.save_checkpoint(self.model, checkpoint_dir)
        ckpt.save_momentum(self.model, self.optimizer, checkpoint_dir)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        self.model = ckpt.load_checkpoint(checkpoint_dir, self.device).to(memory_format=loop.TRAINING_LAYOUT)
        self.optimizer = make_optimizer(self.model, self.config["lr"], self.config["weight_decay"],
                                        self.settings.momentum)
        ckpt.set_momentum(self.model, self.optimizer, ckpt.read_momentum(checkpoint_dir))



def row_recorder(rows: list[dict]):
    class RowRecorder(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            rows.append({k: v for k, v in result.items() if k != "config"})

    return RowRecorder()


def register_probed_strategies(probe_dir: Path, arm: str) -> None:
    """The arm's strategies: the product's, with the probed trainables and timed schedulers."""
    from spidernet_ray.scheduler import SpiderNetScheduler

    @register_strategy("spidernet_probed")
    def spidernet_probed(config: SearchConfig, run_dir: Path) -> Strategy:
        return Strategy(probed(SpiderNetTrainable, str(probe_dir)),
                        spidernet_scheduler(config, run_dir, timed_scheduler(SpiderNetScheduler, arm)))

    @register_strategy("stock_probed")
    def stock_probed(config: SearchConfig, run_dir: Path) -> Strategy:
        return Strategy(probed(StockTrainable, str(probe_dir)),
                        stock_pbt_scheduler(config, timed_scheduler(PopulationBasedTraining, arm)))


def run_stock(config: SearchConfig, splits: DataSplits) -> dict:
    rows: list[dict] = []
    tuner = build_tuner(dataclasses.replace(config, strategy="stock_probed"), splits, callbacks=[row_recorder(rows)])
    clock: dict = {}
    start = time.perf_counter()
    with timed_fit(clock):
        grid = tuner.fit()
    clock["total_seconds"] = time.perf_counter() - start
    clock["errors"] = sum(1 for r in grid if r.error)
    return {"rows": rows, **clock}


@contextlib.contextmanager
def timed_once_per_run(clock: dict):
    """Times the search's once-per-run work into ``clock["once_per_run_seconds"]``: measuring the cost
    model before ``fit`` and the final front after it."""
    clock["once_per_run_seconds"] = 0.0
    originals = {name: getattr(tuner, name) for name in ("run_cost_model", "check_front")}

    def timed(function):
        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                clock["once_per_run_seconds"] += time.perf_counter() - t
        return run

    for name, function in originals.items():
        setattr(tuner, name, timed(function))
    try:
        yield clock
    finally:
        for name, function in originals.items():
            setattr(tuner, name, function)


def run_spidernet(config: SearchConfig) -> dict:
    clock: dict = {}
    start = time.perf_counter()
    with timed_fit(clock), timed_once_per_run(clock):
        code = run_search(dataclasses.replace(config, strategy="spidernet_probed"))
    clock["total_seconds"] = time.perf_counter() - start
    clock["errors"] = int(code != 0)
    rows = pq.read_table(config.experiment_path / TRIALS_FILE).to_pylist()
    return {"rows": rows, **clock}


# -- accounting -----------------------------------------------------------------------------------
def account(arm: str, run: dict, probes: list[dict], cpus: int) -> dict:
    """Overhead fractions and where the CPU-seconds of (fit wall x CPUs) went.

    Work inside actors is counted in CPU seconds of the actor's thread, so members sharing a CPU are
    not counted twice (their wall seconds overlap); what no actor call used is "outside actor calls".
    """
    rows = run["rows"]
    budget = run["fit_seconds"] * cpus
    train = sum(r["train_cpu_seconds"] for r in rows)
    evaluation = sum(r.get("eval_cpu_seconds") or 0.0 for r in rows)
    measure = sum(r.get("measure_cpu_seconds") or 0.0 for r in rows)
    by_phase = {p: [e["cpu"] for e in probes if e["phase"] == p] for p in PHASES}
    phase_sum = {p: sum(v) for p, v in by_phase.items()}
    proxies = sum(json.loads(r["mutation"]).get("seconds", 0.0) for r in rows if r.get("mutation"))
    breakdown = {  # CPU-seconds; these add up to the budget
        "train_epoch": train,
        "evaluate": evaluation,
        "hardware_measure": measure,
        "rest_of_step": phase_sum["train"] - train - evaluation - measure,
        "checkpoint_save": phase_sum["save"],
        "restore_and_proxies": phase_sum["restore"],
        "actor_reset": phase_sum["reset"],
        "actor_init": phase_sum["init"],
        "outside_actor_calls": budget - sum(phase_sum.values()),  # process start, scheduling, RPCs, idle CPUs
    }
    steps = len(rows)
    return {
        "arm": arm,
        "overhead_fraction": 1 - train / budget,
        "overhead_fraction_step": 1 - phase_sum["train"] / budget,
        "fit_wall_seconds": run["fit_seconds"],
        "run_wall_seconds": run["total_seconds"],
        "cpus": cpus,
        "train_cpu_seconds": train,
        "train_wall_seconds": sum(r["train_seconds"] for r in rows),
        "step_cpu_seconds": phase_sum["train"],
        "steps": steps,
        "rounds": max((r["training_iteration"] for r in rows), default=0),
        "mean_train_cpu_seconds_per_step": train / max(steps, 1),
        "exploits": DRIVER[arm]["exploits"],
        "eval_cpu_seconds": evaluation,
        "measure_cpu_seconds": measure,
        "proxy_wall_seconds": proxies,
        "calls": {p: len(v) for p, v in by_phase.items()},
        "cpu_seconds_per_call": {p: (sum(v) / len(v) if v else 0.0) for p, v in by_phase.items()},
        "actor_processes": len({e["pid"] for e in probes}),
        "breakdown_cpu_seconds": breakdown,
        "breakdown_fraction": {k: v / budget for k, v in breakdown.items()},
        "scheduler_seconds": DRIVER[arm]["scheduler_seconds"],
        "scheduler_calls": DRIVER[arm]["scheduler_calls"],
        "driver_cpu_seconds": run["driver_cpu_seconds"],
        "ray_daemon_cpu_seconds": run["ray_daemon_cpu_seconds"],
        "errors": run["errors"],
        "once_per_run_seconds": run.get("once_per_run_seconds", 0.0),
        "overhead_fraction_with_once_per_run": 1 - train / ((run["fit_seconds"] + run.get("once_per_run_seconds", 0.0))
                                                            * cpus),
        "population": run["population"],
        "cpus_per_trial": run["cpus_per_trial"],
    }


def own_work_excluded(accounts: list[dict]) -> float:
    """Pooled overhead with hardware measurement and proxy scoring counted as work: what is left is
    orchestration, validation and the rest of the step (proxy seconds are wall seconds of one thread)."""
    work = sum(a["train_cpu_seconds"] + a["measure_cpu_seconds"] + a["proxy_wall_seconds"] for a in accounts)
    return 1 - work / sum(a["fit_wall_seconds"] * a["cpus"] for a in accounts)


def pooled(accounts: list[dict], key: str = "train_cpu_seconds") -> float:
    """1 - all ``key`` seconds / all (wall x CPUs): repeats weighted by their length."""
    return 1 - sum(a[key] for a in accounts) / sum(a["fit_wall_seconds"] * a["cpus"] for a in accounts)


# -- the benchmark ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Arm:
    strategy: str  # "spidernet" or "stock_pbt"
    shared: bool = False  # the CPUs spread over the population instead of one CPU per member
    at_cpus: bool = False  # population = CPUs, one CPU each


ARMS = {
    "spidernet": Arm("spidernet"),
    "spidernet_shared": Arm("spidernet", shared=True),
    "stock_pbt": Arm("stock_pbt"),
    "stock_pbt_shared": Arm("stock_pbt", shared=True),
    "spidernet_at_cpus": Arm("spidernet", at_cpus=True),
    "stock_pbt_at_cpus": Arm("stock_pbt", at_cpus=True),
}


def arm_config(base: SearchConfig, name: str, repeat: int, cpus: int) -> SearchConfig:
    arm = ARMS[name]
    population = cpus if arm.at_cpus else base.population
    per_trial = cpus / population if arm.shared else 1.0
    return dataclasses.replace(base, name=f"{name}-{repeat}", population=population, cpus_per_trial=per_trial)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    scratch = Path(tempfile.mkdtemp(prefix="spidernet-overhead-"))
    try:
        base = SearchConfig(
            dataset=args.dataset, subset=args.subset, channels=args.channels, population=args.population,
            rounds=args.rounds, epochs_per_round=args.epochs_per_round,
            num_cpus=args.cpus, storage_path=str(scratch), seed=args.seed, name="unset",
        ).validate()
    except ConfigError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"overhead.py: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    seconds_per_batch = None
    if args.subset is None:
        subset, seconds_per_batch = calibrate_subset(base, args.step_seconds)
        base = dataclasses.replace(base, subset=subset)
        print(f"== calibrated: {seconds_per_batch:.3f} s per batch -> --subset {subset}", flush=True)
    splits = load_dataset(base.dataset, base.data_root, seed=base.seed, val_fraction=base.val_fraction,
                          subset=base.subset)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    results: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    try:
        for repeat in range(args.repeats):
            order = list(args.arms) if repeat % 2 == 0 else list(reversed(args.arms))
            for arm in order:
                DRIVER.pop(arm, None)
                config = arm_config(base, arm, repeat, args.cpus)
                probe_dir = scratch / f"probes-{arm}-{repeat}"
                probe_dir.mkdir()
                print(f"== {arm}, repeat {repeat + 1}/{args.repeats}", flush=True)
                register_probed_strategies(probe_dir, arm)
                run = run_spidernet(config) if ARMS[arm].strategy == "spidernet" else run_stock(config, splits)
                if run["errors"] or not run["rows"]:
                    raise SystemExit(f"{arm}: trials errored ({run['errors']}) or reported nothing; rerun with --keep "
                                     f"and see {config.experiment_path}")
                run.update(population=config.population, cpus_per_trial=config.cpus_per_trial)
                result = account(arm, run, read_probes(probe_dir), args.cpus)
                results[arm].append(result)
                print(f"== {arm}: overhead {result['overhead_fraction']:.1%} over {result['fit_wall_seconds']:.1f} s "
                      f"x {args.cpus} CPUs, {result['train_cpu_seconds']:.1f} CPU-s in train_epoch over "
                      f"{result['steps']} steps", flush=True)
    finally:
        ray.shutdown()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    if set(args.arms) != set(ARMS):  # a diagnostic run of some arms: printed, the committed results stay
        print(json.dumps(results, indent=2, default=str))
        return results
    figures = {arm: pooled(runs) for arm, runs in results.items()}
    ours = figures["spidernet"]
    stock_best = min(("stock_pbt", "stock_pbt_shared"), key=figures.get)
    stock = figures[stock_best]
    report = {
        "spidernet_overhead_fraction": ours,
        "stock_pbt_overhead_fraction": stock,
        "stock_pbt_best_configuration": stock_best,
        "ratio_spidernet_over_stock": ours / stock if stock > 0 else None,
        "overhead_fraction": figures,
        "spidernet_shared_overhead_fraction": figures["spidernet_shared"],
        "spidernet_overhead_fraction_with_once_per_run": once_per_run_counted(results["spidernet"]),
        "population_equals_cpus": {"spidernet": figures["spidernet_at_cpus"],
                                   "stock_pbt": figures["stock_pbt_at_cpus"]},
        "overhead_fraction_step": {arm: pooled(runs, "step_cpu_seconds") for arm, runs in results.items()},
        "overhead_fraction_without_measurement_and_proxies": {arm: own_work_excluded(runs)
                                                              for arm, runs in results.items()},
        "target": TARGET,
        "meets_target": ours <= TARGET and ours < stock,
        "runs": results,
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "subset": base.subset, "calibrated_seconds_per_batch": seconds_per_batch,
            "batch_size": base.batch_size, "reductions": base.reductions, "initial_splits": base.initial_splits,
            "candidates_per_cell": base.candidates_per_cell, "quantile_fraction": base.quantile_fraction,
            "train_examples": len(splits.y_train), "val_examples": len(splits.y_val),
            "wall_measured": "Tuner.fit()", "ray": ray.__version__, "torch": torch.__version__,
            "code": code_version(), "machine": platform.machine(), "os_cpus": os.cpu_count(),
            "load_average_before": LOAD_BEFORE, "load_average_after": os.getloadavg()[0],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "overhead.md").write_text(markdown(report))
    print(markdown(report))
    return report


LOAD_BEFORE = os.getloadavg()[0]


def once_per_run_counted(accounts: list[dict]) -> float:
    """Pooled overhead with the once-per-run work (cost model, front check) added to the wall."""
    budget = sum((a["fit_wall_seconds"] + a["once_per_run_seconds"]) * a["cpus"] for a in accounts)
    return 1 - sum(a["train_cpu_seconds"] for a in accounts) / budget


def markdown(report: dict) -> str:
    s, runs = report["settings"], report["runs"]
    arms = list(runs)

    def row(name, value):
        return f"| {name} | " + " | ".join(value(runs[arm]) for arm in arms) + " |"

    def mean(key, fmt):
        return lambda arm_runs: format(statistics.fmean(r[key] for r in arm_runs), fmt)

    def frac(key):
        return lambda arm_runs: f"{statistics.fmean(r['breakdown_fraction'][key] for r in arm_runs):.1%}"

    header = "| | " + " | ".join(arms) + " |\n|---|" + "---:|" * len(arms)
    lines = [
        "# Orchestration overhead: SpiderNet search vs stock PBT",
        "",
        f"Population {s['population']} on {s['cpus']} CPUs (the `_at_cpus` arms: population {s['cpus']}), "
        f"{s['rounds']} rounds (one Tune step = one round), "
        f"{s['dataset']} ({s['train_examples']} training examples), C={s['channels']}, {s['epochs_per_round']} "
        f"epoch per round, batch {s['batch_size']}; Ray {s['ray']}, torch {s['torch']}, {s['repeats']} repeat(s), "
        f"{s['date']}, load average {s.get('load_average_before', float('nan')):.1f} before and "
        f"{s['load_average_after']:.1f} after on {s['os_cpus']} cores, code "
        f"{s.get('code', 'unknown')}. Wall = `Tuner.fit()`.",
        "",
        "overhead = 1 - (CPU seconds in `train_epoch`, summed over trials) / (wall seconds x CPUs)",
        "",
        f"Headline: spidernet (the product's default) **{report['spidernet_overhead_fraction']:.1%}**, sharing the CPUs "
        f"{report['spidernet_shared_overhead_fraction']:.1%}, against stock PBT's best configuration "
        f"({report['stock_pbt_best_configuration']}) **{report['stock_pbt_overhead_fraction']:.1%}**; "
        f"at population = CPUs: spidernet {report['population_equals_cpus']['spidernet']:.1%}, stock PBT "
        f"{report['population_equals_cpus']['stock_pbt']:.1%}. Counting the search's once-per-run work (cost model "
        f"before `fit`, front measured after it) in its wall: {report['spidernet_overhead_fraction_with_once_per_run']:.1%}.",
        "",
        header,
        row("CPUs per member: how members share the CPUs", lambda r: taking_turns(r[0], s["cpus"])),
        row(f"**overhead fraction** (target <= {report['target']:.0%}, below stock)",
            lambda r: f"**{pooled(r):.1%}**"),
        row("overhead if validation + hardware measurement counted as work (whole `step()`)",
            lambda r: f"{pooled(r, 'step_cpu_seconds'):.1%}"),
        row("overhead not counting hardware measurement and proxies (the search's own work)",
            lambda r: f"{own_work_excluded(r):.1%}"),
        row("each run's overhead fraction (actor processes it started)",
            lambda r: ", ".join(f"{a['overhead_fraction']:.1%} ({a['actor_processes']})" for a in r)),
        row("wall seconds (`Tuner.fit`)", mean("fit_wall_seconds", ".1f")),
        row("CPU seconds in `train_epoch`, summed", mean("train_cpu_seconds", ".1f")),
        row("steps", mean("steps", ".0f")),
        row("mean `train_epoch` CPU seconds per step", mean("mean_train_cpu_seconds_per_step", ".2f")),
        row("exploits", mean("exploits", ".1f")),
        row("once-per-run seconds (cost model, front check; outside `fit`)", mean("once_per_run_seconds", ".1f")),
        row("overhead counting them", lambda r: f"{once_per_run_counted(r):.1%}"),
        row("actor processes", mean("actor_processes", ".1f")),
        "",
        "Where (wall x CPUs) went, as shares of it (the rows add up to 100%):",
        "",
        header,
    ]
    names = {
        "train_epoch": "training (`train_epoch`)",
        "evaluate": "validation (`evaluate`)",
        "hardware_measure": "hardware measurement",
        "rest_of_step": "rest of the step (anneal, prune, report)",
        "checkpoint_save": "checkpoint save (incl. Ray's persist)",
        "restore_and_proxies": "restore (incl. proxies on exploit)",
        "actor_reset": "actor reuse (`reset`)",
        "actor_init": "actor `__init__` + setup",
        "outside_actor_calls": "outside actor calls (process start, scheduling, RPC, Ray daemons, idle)",
    }
    lines += [row(name, frac(key)) for key, name in names.items()]
    lines += [
        "",
        row("proxies on exploit, wall seconds in all (inside restore)", mean("proxy_wall_seconds", ".1f")),
        row("scheduler hooks, driver seconds", mean("scheduler_seconds", ".2f")),
        row("driver process CPU seconds", mean("driver_cpu_seconds", ".1f")),
        row("Ray daemons CPU seconds", mean("ray_daemon_cpu_seconds", ".1f")),
        "",
        "Produced by (" + (f"--subset calibrated to {s['step_seconds']:g} s per step at "
                          f"{s['calibrated_seconds_per_batch']:.3f} s per batch" if s["calibrated_seconds_per_batch"]
                          else "--subset given") + "):",
        "",
        "```",
        f"python benchmarks/overhead.py --population {s['population']} --cpus {s['cpus']} --rounds {s['rounds']} "
        f"--dataset {s['dataset']} --subset {s['subset']} --channels {s['channels']} "
        f"--epochs-per-round {s['epochs_per_round']} --repeats {s['repeats']}",
        "```",
        "",
    ]
    return "\n".join(lines)


def taking_turns(run: dict, cpus: int) -> str:
    """How a run's members shared the CPUs, in words."""
    per_trial, population = run["cpus_per_trial"], run["population"]
    at_once = int(cpus // per_trial)
    if at_once >= population:
        return f"{per_trial:g}: all {population} at once"
    return f"{per_trial:g}: {at_once} of {population} at a time, taking turns"


if __name__ == "__main__":
    main()
