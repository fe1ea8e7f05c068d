"""Final training: retrain chosen architectures of a search from scratch and quote their test accuracy.

    python -m spidernet_ray.retrain <run dir> --front --epochs 30
    python -m spidernet_ray.retrain <run dir> --members 8f1e2_00003 8f1e2_00001 --epochs 30 --export
    python -m spidernet_ray.retrain <run dir> --front --max-params 100000 --top 1 --epochs 30

The search's weights are thrown away: each chosen architecture is rebuilt as a plain discrete network
(``DiscreteNet(Genome.from_json(row["genome"]))``) with fresh weights and trained under one fixed
recipe, every architecture as its own Ray Tune trial, in parallel, the data shared through
``tune.with_parameters``. Recipe: SGD with momentum 0.9 and weight decay 3e-4, a cosine learning-rate
schedule over all steps of all epochs, the data pipeline's augmentation (``make_loaders(augment=True)``,
plus cutout when asked), the auxiliary-head loss of ``train.train_step``. Each epoch reports train loss
and validation accuracy; after the last one the trial evaluates the test split (the only place in the
project where it is used), measures the network (``hardware.measure``) and returns its weights as a
checkpoint.

What it reads from the run directory: ``search_config.json`` (dataset, data root, seed, validation
fraction, batch size), ``pareto.parquet`` (``--front``) and ``trials.parquet`` (``--members``: each
trial's best row by validation accuracy). What it writes, under ``<run dir>/retrain/``:

    retrain.parquet            one row per retrained architecture (earlier retrains of other ones kept)
    retrain.md                 the same as a markdown table
    <genome_hash>/             the trained checkpoint (genome.json, weights.safetensors, network.json),
                               preprocess.json (input scaling, mean/std, class names) and, with
                               --export, model.pt2 / model.ts / model.onnx
    tune-<time>/               Ray Tune's own experiment directory

and finally the run report (``report.md``, see ``spidernet_ray.report``). Bad input (missing run
directory or files, unknown member, non-positive epochs) is one line on stderr, exit code 2, and
nothing written.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from spidernet_ray.config import ConfigError, OneLineArgumentParser, SearchConfig, read_run_config, run_command
from spidernet_ray.data import DataError, DataSplits, load_dataset, make_loaders
from spidernet_ray.genome import Genome, GenomeError
from spidernet_ray.reporting import format_retrain_table, write_report
from spidernet_ray.results import to_table
from spidernet_ray.rundir import (
    PARETO_FILE,
    RETRAIN_DIR,
    RETRAIN_MARKDOWN,
    RETRAIN_TABLE,
    TRIALS_FILE,
    atomic_write,
    is_finite_number,
)
from spidernet_ray.tuner import start_ray

PREPROCESS_FILE = "preprocess.json"
MOMENTUM = 0.9
WEIGHT_DECAY = 3e-4

# Leading columns of retrain.parquet, in this order (typed even when a value is missing).
_F, _I, _S, _B = pa.float64(), pa.int64(), pa.string(), pa.bool_()
COLUMNS: dict[str, pa.DataType] = {
    "genome_hash": _S, "source_trial": _S, "source_round": _I,
    "search_val_accuracy": _F, "search_latency_ms": _F, "search_peak_memory_mb": _F, "search_params": _I,
    "test_accuracy": _F, "test_loss": _F, "val_accuracy": _F, "val_loss": _F, "train_loss": _F,
    "params": _I, "flops": _I, "latency_ms": _F, "latency_spread_ms": _F, "peak_memory_mb": _F,
    "memory_method": _S, "device": _S, "train_seconds": _F, "seconds_per_epoch": _F,
    "epochs": _I, "batch_size": _I, "lr": _F, "momentum": _F, "weight_decay": _F, "drop_path": _F,
    "cutout": _I, "seed": _I, "dataset": _S, "train_examples": _I, "val_examples": _I, "test_examples": _I,
    "diverged": _B, "error": _S, "checkpoint": _S, "exported": _S, "retrained_at": _S, "genome": _S,
}


class RetrainError(ValueError):
    """Bad input to a retrain: reported in one line before anything is written."""


@dataclass(frozen=True)
class Recipe:
    """The fixed training protocol every retrained architecture gets (momentum and decay are fixed)."""

    epochs: int
    batch_size: int = 96
    lr: float = 0.05
    drop_path: float = 0.0  # raised linearly from 0 to this over the epochs (as DARTS does)
    cutout: int = 0  # side of the cutout square; 0 = off
    seed: int = 0
    latency_batch_size: int = 1
    momentum: float = MOMENTUM
    weight_decay: float = WEIGHT_DECAY

    def validate(self) -> Recipe:
        for name in ("epochs", "batch_size", "latency_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise RetrainError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise RetrainError(f"--lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.drop_path < 1:
            raise RetrainError(f"--drop-path must be in [0, 1), got {self.drop_path!r}")
        if self.cutout < 0:
            raise RetrainError(f"--cutout must be >= 0, got {self.cutout!r}")
        return self


@dataclass(frozen=True)
class Candidate:
    """One architecture to retrain and the search row it came from."""

    genome_hash: str
    genome: str  # JSON
    source_trial: str
    source_round: int | None
    search: dict[str, Any]  # the search row's val_accuracy, latency_ms, peak_memory_mb, params


@dataclass
class Plan:
    """Everything a retrain needs, checked and loaded before anything is written."""

    run_dir: Path
    candidates: list[Candidate]
    recipe: Recipe
    splits: DataSplits
    search_config: SearchConfig
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    address: str | None = None
    num_cpus: int | None = None
    export: bool = False
    verbose: int = 0

    @property
    def retrain_dir(self) -> Path:
        return self.run_dir / RETRAIN_DIR


# -- choosing what to retrain ----------------------------------------------------------------------
def read_search_config(run_dir: Path) -> SearchConfig:
    if not run_dir.is_dir():
        raise RetrainError(f"run directory {run_dir} does not exist")
    return read_run_config(run_dir)  # a ConfigError (one line) when missing or unreadable


def _read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise RetrainError(f"{path.parent} has no {path.name}: did the search finish?")
    try:
        return pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise RetrainError(f"{path} is unreadable: {exc}") from None


def _candidate(row: dict[str, Any]) -> Candidate:
    genome = Genome.from_json(row["genome"])  # raises GenomeError on a bad genome
    return Candidate(
        genome_hash=genome.hash,
        genome=genome.to_json(),
        source_trial=str(row.get("trial_id") or ""),
        source_round=row.get("training_iteration"),
        search={k: row.get(k) for k in ("val_accuracy", "latency_ms", "peak_memory_mb", "params")},
    )


def select_candidates(
    run_dir: str | Path,
    members: list[str] | None = None,
    front: bool = False,
    max_params: int | None = None,
    top: int | None = None,
) -> list[Candidate]:
    """The architectures to retrain, best search val accuracy first, one per genome hash.

    ``front``: every member of ``pareto.parquet``. ``members``: for each trial id, its best row of
    ``trials.parquet`` by val accuracy (diverged rows never count). ``max_params`` keeps only
    architectures with at most that many parameters, ``top`` the best ``top`` of what is left.
    """
    run_dir = Path(run_dir)
    if bool(members) == bool(front):
        raise RetrainError("choose what to retrain: --front or --members TRIAL_ID ...")
    front_rows = _read_parquet_rows(run_dir / PARETO_FILE)  # required either way: a finished search has it
    if front:
        rows = front_rows
        if not rows:
            raise RetrainError(f"{run_dir / PARETO_FILE} is empty: the search found no feasible architecture")
    else:
        trials = [r for r in _read_parquet_rows(run_dir / TRIALS_FILE)
                  if not r.get("diverged") and is_finite_number(r.get("val_accuracy")) and r.get("genome")]
        known = sorted({str(r["trial_id"]) for r in trials})
        rows = []
        for member in members:
            own = [r for r in trials if str(r["trial_id"]) == member]
            if not own:
                raise RetrainError(f"unknown member {member!r}; the run's members are: {', '.join(known)}")
            rows.append(max(own, key=lambda r: (r["val_accuracy"], r.get("training_iteration") or 0)))
    if max_params is not None:
        rows = [r for r in rows if is_finite_number(r.get("params")) and r["params"] <= max_params]
        if not rows:
            raise RetrainError(f"no chosen architecture has at most {max_params:,} parameters")
    rows = sorted(rows, key=lambda r: -r["val_accuracy"] if is_finite_number(r.get("val_accuracy")) else math.inf)
    candidates: dict[str, Candidate] = {}
    for row in rows:
        candidate = _candidate(row)
        candidates.setdefault(candidate.genome_hash, candidate)
    chosen = list(candidates.values())
    return chosen[:top] if top is not None else chosen


# -- one trial: train one architecture from scratch --------------------------------------------------
def train_from_scratch(
    model: torch.nn.Module,
    splits: DataSplits,
    recipe: Recipe,
    device: torch.device | str,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """The recipe, top to bottom, on a freshly initialised ``model`` (anything ``train.train_step`` trains:
    a module with ``forward_heads``). ``on_epoch`` hears every epoch's metrics but the last; the last
    epoch's come back, with the test split's accuracy and loss added (its one use) unless training
    diverged. Drop path applies to cell networks (``set_drop_path``); other modules must have it off."""
    from spidernet_ray.train import evaluate, make_optimizer, train_step

    if recipe.drop_path and not hasattr(model, "set_drop_path"):
        raise RetrainError(f"{type(model).__name__} has no drop path; train it with --drop-path 0")
    set_drop_path = getattr(model, "set_drop_path", lambda p: None)
    optimizer = make_optimizer(model, recipe.lr, recipe.weight_decay, recipe.momentum)
    loaders = make_loaders(splits, recipe.batch_size, device, augment=True, cutout=recipe.cutout, seed=recipe.seed)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs * len(loaders.train))

    train_seconds, diverged = 0.0, False
    for epoch in range(recipe.epochs):
        set_drop_path(recipe.drop_path * epoch / recipe.epochs)
        start = time.perf_counter()
        total, steps = 0.0, 0
        for x, y in loaders.train:
            loss = train_step(model, optimizer, x, y)
            schedule.step()
            total, steps = total + loss, steps + 1
            if not math.isfinite(loss):
                diverged = True
                break
        train_seconds += time.perf_counter() - start
        val_accuracy, val_loss = evaluate(model, loaders.val)
        metrics = {"epoch": epoch + 1, "train_loss": total / max(steps, 1), "val_accuracy": val_accuracy,
                   "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"], "train_seconds": train_seconds,
                   "diverged": diverged}
        if diverged:
            return metrics
        if epoch + 1 < recipe.epochs and on_epoch is not None:
            on_epoch(metrics)

    set_drop_path(0.0)
    test_accuracy, test_loss = evaluate(model, loaders.test)  # the one use of the test split
    return {**metrics, "test_accuracy": test_accuracy, "test_loss": test_loss}


def retrain_trial(config: dict, splits: DataSplits, genomes: dict[str, str]) -> None:
    """Ray Tune function trainable: train ``genomes[config["genome_hash"]]`` under ``config["recipe"]``
    (``train_from_scratch``), then measure it and return its weights as a checkpoint."""
    from ray import tune

    from spidernet_ray.checkpoint import save_checkpoint
    from spidernet_ray.hardware import measure
    from spidernet_ray.supernet import DiscreteNet
    from spidernet_ray.train import TRAINING_LAYOUT
    from spidernet_ray.trainable import trial_device

    recipe = Recipe(**config["recipe"])
    device = trial_device()
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    torch.manual_seed(recipe.seed)
    model = DiscreteNet(Genome.from_json(genomes[config["genome_hash"]])).to(device, memory_format=TRAINING_LAYOUT)
    metrics = train_from_scratch(model, splits, recipe, device, on_epoch=tune.report)
    if metrics["diverged"]:
        tune.report(metrics)
        return
    hardware = measure(model, splits.input_shape, recipe.batch_size, device,
                       latency_batch_size=recipe.latency_batch_size).to_dict()
    metrics.update(**hardware)
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(model.cpu(), directory)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


# -- the driver ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineArgumentParser(prog="python -m spidernet_ray.retrain", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="the search's run directory (<storage-path>/<name>)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--front", action="store_true", help="retrain every architecture of pareto.parquet")
    which.add_argument("--members", nargs="+", metavar="TRIAL_ID", help="retrain these trials' best rows")
    p.add_argument("--max-params", type=int, help="only architectures with at most this many parameters")
    p.add_argument("--top", type=int, help="only the best K (by search val accuracy) of those chosen")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, help="default: the search's batch size")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the cosine schedule")
    p.add_argument("--drop-path", type=float, default=0.0, help="final drop-path probability (ramped from 0)")
    p.add_argument("--cutout", type=int, default=0, help="cutout square side in pixels (0: off)")
    p.add_argument("--seed", type=int, help="default: the search's seed")
    p.add_argument("--subset", type=int,
                   help="use only this many training examples, validation included (the test split shrinks "
                        "in proportion); default: all of them")
    p.add_argument("--data-root", help="default: the search's data root")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--address", help="attach to a running Ray cluster ('auto' finds the local one)")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--gpus-per-trial", type=float, default=0)
    p.add_argument("--export", action="store_true", help="export every retrained network (pt2, TorchScript, ONNX)")
    p.add_argument("--verbose", type=int, default=0, help="1 or 2: show Ray's own progress table and logs")
    return p.parse_args(argv)


def plan_retrain(args: argparse.Namespace) -> Plan:
    """Check the input and load the data; raises RetrainError / DataError / GenomeError, writes nothing."""
    run_dir = Path(args.run_dir).expanduser().resolve()
    search = read_search_config(run_dir)
    for name in ("max_params", "top", "subset", "num_cpus"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise RetrainError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise RetrainError("--cpus-per-trial must be positive and --gpus-per-trial non-negative")
    recipe = Recipe(
        epochs=args.epochs,
        batch_size=args.batch_size if args.batch_size is not None else search.batch_size,
        lr=args.lr,
        drop_path=args.drop_path,
        cutout=args.cutout,
        seed=args.seed if args.seed is not None else search.seed,
        latency_batch_size=search.latency_batch_size,
    ).validate()
    candidates = select_candidates(run_dir, args.members, args.front, args.max_params, args.top)
    data_root = args.data_root if args.data_root is not None else search.data_root
    splits = load_dataset(search.dataset, data_root, seed=search.seed, val_fraction=search.val_fraction,
                          subset=args.subset)
    return Plan(run_dir=run_dir, candidates=candidates, recipe=recipe, splits=splits, search_config=search,
                cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, address=args.address,
                num_cpus=args.num_cpus, export=args.export, verbose=args.verbose)


def _progress_callback(plan: Plan):
    from ray import tune

    epochs = plan.recipe.epochs

    class _Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            line = (f"{trial.config['genome_hash']} epoch {result.get('epoch')}/{epochs} | "
                    f"train loss {result.get('train_loss', float('nan')):.4f} | "
                    f"val acc {result.get('val_accuracy', float('nan')):.2%} | {result.get('train_seconds', 0):.0f}s")
            if "test_accuracy" in result:
                line += f" | test acc {result['test_accuracy']:.2%}"
            print(line, flush=True)

    return _Progress()


def run(plan: Plan) -> int:
    from ray import tune

    start_ray(plan.address, plan.num_cpus, 0, plan.verbose)
    if plan.verbose == 0:
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
    retrain_dir = plan.retrain_dir
    retrain_dir.mkdir(parents=True, exist_ok=True)
    genomes = {c.genome_hash: c.genome for c in plan.candidates}
    trainable = tune.with_resources(
        tune.with_parameters(retrain_trial, splits=plan.splits, genomes=genomes),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"genome_hash": tune.grid_search(list(genomes)), "recipe": asdict(plan.recipe)},
        tune_config=tune.TuneConfig(num_samples=1,
                                    trial_dirname_creator=lambda t: f"retrain_{t.config['genome_hash']}"),
        run_config=tune.RunConfig(
            name=f"tune-{datetime.now():%Y%m%d-%H%M%S}",
            storage_path=str(retrain_dir),
            callbacks=[_progress_callback(plan)],
            verbose=plan.verbose,
        ),
    )
    print(f"retraining {len(genomes)} architecture(s) from scratch for {plan.recipe.epochs} epoch(s) on "
          f"{plan.splits!r} -> {retrain_dir}", flush=True)
    grid = tuner.fit()

    rows, failed = [], 0
    by_hash = {c.genome_hash: c for c in plan.candidates}
    for result in grid:
        candidate = by_hash[result.config["genome_hash"]]
        row = _row(plan, candidate, result.metrics or {}, result.error)
        if result.checkpoint is not None and not result.error:
            failed += not _install(plan, candidate, result.checkpoint, row)
        else:
            failed += 1
        rows.append(row)
    table = write_retrain_table(plan.run_dir, rows)
    print(format_retrain_table(table))

    report = write_report(plan.run_dir)
    print(f"retrained: {retrain_dir / RETRAIN_TABLE}\nreport: {report}")
    if failed:
        print(f"{failed} architecture(s) failed to retrain or export; see {retrain_dir}", file=sys.stderr)
        return 1
    return 0


def _row(plan: Plan, candidate: Candidate, metrics: dict, error: Exception | None) -> dict[str, Any]:
    r, splits = plan.recipe, plan.splits
    epochs_done = metrics.get("epoch") or 0
    return {
        "genome_hash": candidate.genome_hash,
        "source_trial": candidate.source_trial,
        "source_round": candidate.source_round,
        "search_val_accuracy": candidate.search.get("val_accuracy"),
        "search_latency_ms": candidate.search.get("latency_ms"),
        "search_peak_memory_mb": candidate.search.get("peak_memory_mb"),
        "search_params": candidate.search.get("params"),
        **{k: metrics.get(k) for k in ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "train_loss",
                                       "params", "flops", "latency_ms", "latency_spread_ms", "peak_memory_mb",
                                       "memory_method", "device", "train_seconds")},
        "seconds_per_epoch": metrics["train_seconds"] / epochs_done if epochs_done else None,
        "epochs": r.epochs, "batch_size": r.batch_size, "lr": r.lr, "momentum": r.momentum,
        "weight_decay": r.weight_decay, "drop_path": r.drop_path, "cutout": r.cutout, "seed": r.seed,
        "dataset": splits.name, "train_examples": len(splits.y_train), "val_examples": len(splits.y_val),
        "test_examples": len(splits.y_test),
        "diverged": bool(metrics.get("diverged", False)),
        "error": _problem(metrics, error, r.epochs),
        "checkpoint": "", "exported": "",
        "retrained_at": datetime.now().isoformat(timespec="seconds"),
        "genome": candidate.genome,
    }


def _problem(metrics: dict, error: Exception | None, epochs: int) -> str:
    """What went wrong with a trial, in one line ("" when it finished)."""
    if error:
        return f"{type(error).__name__}: {error}".splitlines()[0]
    if metrics.get("diverged"):
        return f"training diverged in epoch {metrics.get('epoch')}"
    if "test_accuracy" not in metrics:
        return f"stopped after {metrics.get('epoch') or 0} of {epochs} epochs"
    return ""


def _install(plan: Plan, candidate: Candidate, checkpoint, row: dict[str, Any]) -> bool:
    """Copy the trial's checkpoint to ``retrain/<hash>/``, add preprocess.json, export if asked."""
    from spidernet_ray.checkpoint import load_checkpoint
    from spidernet_ray.export import ExportError, export_model

    target = plan.retrain_dir / candidate.genome_hash
    if target.exists():
        shutil.rmtree(target)  # an earlier retrain of this architecture: replaced whole
    checkpoint.to_directory(str(target))
    splits = plan.splits
    preprocess = splits.preprocessing()
    (target / PREPROCESS_FILE).write_text(json.dumps(preprocess, indent=1))
    row["checkpoint"] = str(target.relative_to(plan.run_dir))
    if not plan.export:
        return True
    try:
        exported = export_model(load_checkpoint(target), target, splits.input_shape, preprocess=preprocess)
    except ExportError as exc:
        row["error"] = str(exc).splitlines()[0]
        return False
    for fmt, path in exported.files.items():
        print(f"{candidate.genome_hash}: exported {fmt} to {path}")
    row["exported"] = ",".join(path.name for path in exported.files.values())
    for why in exported.skipped.values():
        print(f"{candidate.genome_hash}: {why}")
    return True


# -- the table --------------------------------------------------------------------------------------
def read_retrain_table(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / RETRAIN_DIR / RETRAIN_TABLE
    return pq.read_table(path).to_pylist() if path.is_file() else []


def write_retrain_table(run_dir: str | Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge ``rows`` into ``retrain.parquet`` (a new row replaces the old one of its architecture),
    write it and ``retrain.md``; returns the merged rows, best test accuracy first."""
    directory = Path(run_dir) / RETRAIN_DIR
    directory.mkdir(parents=True, exist_ok=True)
    merged = {row["genome_hash"]: row for row in read_retrain_table(run_dir)}
    merged.update({row["genome_hash"]: row for row in rows})
    table = sorted(merged.values(), key=lambda r: -r["test_accuracy"] if is_finite_number(r.get("test_accuracy")) else 1.0)
    atomic_write(directory / RETRAIN_TABLE, lambda tmp: pq.write_table(to_table(table, tuple(COLUMNS), COLUMNS), tmp))
    atomic_write(directory / RETRAIN_MARKDOWN, lambda tmp: tmp.write_text(
        "# Retrained from scratch\n\n" + format_retrain_table(table) + "\n", encoding="utf-8"))
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # run's start_ray refuses a cluster it cannot join (ConfigError)
    return run_command("spidernet_ray.retrain", lambda: run(plan_retrain(args)),
                       (RetrainError, ConfigError, DataError, GenomeError))


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
