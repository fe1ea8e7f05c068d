"""What each search delivers at equal wall-clock: SpiderNet against three baselines, over paired seeds.

Arms, every one a registered strategy run through ``spidernet_ray.tuner.run_search`` on the same data
split, the same CPUs of one local Ray (started once) and the same training recipe:

- ``spidernet``: the search, with the launcher's defaults;
- ``random``: random architectures from the space the search reaches (``baselines.random_start``), each
  trained for ``random_rounds`` rounds under Tune's FIFO scheduler, new ones sampled until time is up;
- ``random_asha``: the same members under Ray Tune's ``ASHAScheduler`` (early stopping);
- ``pbt``: Ray Tune's stock PopulationBasedTraining on the hand-written fixed network.

Budget. Every arm gets the same wall-clock seconds (``SearchConfig.time_budget_s``, which Tune's
``TuneConfig(time_budget_s=...)`` enforces; rounds are set so high that time always ends the run). Tune
starts its clock when its loop starts, so each arm's rows are also cut at the budget measured from the
arm's own start, set-up included (the equal-wall-clock cut, ``within_wall_clock``). Trial-epochs within
the cut are reported beside it. The arms of one seed run back to back, in an order that rotates with
the seed, so a drift in the shared machine's load hits each alike.

Score: the deliverable. Each arm's final validation front (``validation_front``: the Pareto front of
(val accuracy, latency) of its rows within the cut, at most ``FRONT_SIZE`` models, chosen on validation
only) is retrained from scratch under one fixed recipe (``spidernet_ray.retrain``'s trial), evaluated
once on the test split, and measured in this process, one model at a time, with nothing else running
(latency at batch 1 on one thread, peak memory of a training step). Per arm and seed:

- hypervolume of (test error, latency) and of (test error, peak memory), each axis normalised by its
  min and max pooled over every retrained model of every arm and seed of the dataset, against the
  reference point ``REFERENCE_POINT`` (fixed in advance);
- the best test accuracy within each of three latency budgets, fixed in advance as multiples
  (``LATENCY_BUDGETS``) of the hand-written network's latency, measured with each seed's models;
- the latency at matched accuracy (``latency_at_matched_accuracy``), search over baseline.

Per baseline, the ratios search / baseline over seeds: mean, 95 % bootstrap interval and the exact
Wilcoxon signed-rank p-value (``compare_stats``). The hypervolume of everything seen, on validation,
over each arm's wall time is an anytime curve (a plot), not the headline.

    python benchmarks/compare.py                         # the full comparison, written to results/
    python benchmarks/compare.py --quick                 # smoke run: digits, one dev seed, to /tmp
    python benchmarks/compare.py --datasets digits --seeds 0 1 2
    python benchmarks/compare.py --render --reading reading.md   # rewrite compare.md and plots from compare.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from compare_stats import ratio_summary  # benchmarks/compare_stats.py, beside this script
from provenance import code_version
from spidernet_ray.config import OneLineArgumentParser
from spidernet_ray.pareto import hypervolume_2d
from spidernet_ray.results import pareto_front, snapshot_rows
from spidernet_ray.rundir import ROWS_FILE

RESULTS = Path(__file__).resolve().parent / "results"
FASHION_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
ARMS = ("spidernet", "random", "random_asha", "pbt")
BASELINES = ARMS[1:]
FRONT_SIZE = 5  # models a user takes home from one search
REFERENCE_POINT = (1.1, 1.1)  # in normalised units: every retrained model lies inside, the worst adds 0.1 x 0.1
# Multiples of the hand-written network's latency. On the development seed the delivered models spanned
# 0.55x to 2.6x of it; the three budgets split that range.
LATENCY_BUDGETS = (0.75, 1.5, 3.0)
ROUNDS = 10_000  # so high that time, not rounds, ends every arm
COSTS = {"latency": "latency_ms", "memory": "peak_memory_mb"}


@dataclass(frozen=True)
class Plan:
    """How one dataset is compared; written into compare.json."""

    search: dict[str, Any]  # SearchConfig fields every arm shares
    budget_seconds: float  # wall clock per arm, set-up included
    seeds: tuple[int, ...]
    random_rounds: int  # rounds each random-search member trains before the next one is sampled
    retrain_epochs: int
    test_examples: int | None = None  # a fixed stratified part of the official test split; None: all of it


# Sized so that the default run takes under an hour on a 2-core machine (60 arms); calibrated on
# development seeds (100 and up) only, see CALIBRATION. Validation sets hold at least 400 images.
PLANS: dict[str, Plan] = {
    # digits: 1438 training images (the rest is the fixed test split of 359); 28 % of them validate: 403.
    "digits": Plan(search={"dataset": "digits", "val_fraction": 0.28, "channels": 4, "reductions": 2,
                           "population": 4, "epochs_per_round": 1, "batch_size": 64},
                   budget_seconds=25, seeds=tuple(range(10)), random_rounds=3, retrain_epochs=4),
    # Fashion-MNIST at 14x14 (a quarter of the compute per image): 1600 training images, a quarter of them
    # (400) for validation; 2000 test images.
    "fashion_mnist": Plan(search={"dataset": "fashion_mnist_14x14", "subset": 1600, "val_fraction": 0.25, "channels": 4,
                                  "reductions": 2, "population": 4, "epochs_per_round": 1, "batch_size": 64},
                          budget_seconds=35, seeds=tuple(range(5)), random_rounds=3, retrain_epochs=3,
                          test_examples=2000),
}
# The smoke run (--quick): two members per arm, a budget in which most arms report a row or two, two retrain epochs,
# a development seed.
QUICK = {"budget_seconds": 12, "seeds": (100,), "random_rounds": 1, "retrain_epochs": 2}
QUICK_POPULATION = 2
# Written into compare.json and compare.md: how the sizes above were chosen.
CALIBRATION = (
    "Calibrated on development seeds 101-103 only (never the reported seeds), on the 2-core machine, mostly while "
    "other jobs kept its load average at 5-20, so partly from CPU seconds, which load inflates little. A trial "
    "actor's start costs about 4 s of CPU (imports); a search member's first round about 4.6 s of CPU on digits at "
    "C=4 (8.7 s at C=8) and 6.8 s on Fashion-MNIST at 14x14 (about 2.6x that at 28x28, hence the reduced "
    "resolution); a random member's round about 1.8 s and 2.7 s, stock PBT's fixed network's about 0.8 s. At a "
    "load of 2-4: a digits search arm reported its first rows 13 s after its start, then two rows every 4 s "
    "(15 rows, 4 exploits in 45 s), so about 7 rows in 25 s, under 2 rounds per member; random search trains "
    "2-3x its trial-epochs, stock PBT about 5x. A Fashion-MNIST seed took 255 s (arms of 38-44 s, retraining 7 "
    "models for 3 epochs 78 s); its search arm reported first 17 s after its start and one round per member "
    "in 35 s. Retraining 14 digits models for 6 epochs took 100 s (the search's dense models 16-21 s each, "
    "the others 3-15 s), hence 4 epochs on digits and 3 on Fashion-MNIST. An arm takes its budget plus 3-9 s. "
    "Estimated default run: digits 40 arms x ~29 s + 10 retrains of ~13 models x ~65 s = ~30 min; "
    "Fashion-MNIST 20 arms x ~41 s + 5 retrains x ~120 s = ~24 min; 50-55 min in all on a quiet machine. "
    "Under a load of 10 everything runs about 3.5x slower and arms of these budgets deliver little or nothing."
)


# -- scoring one arm (pure functions on the rows it wrote) -------------------------------------------------
def arrival_rows(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of ``rows.jsonl`` in the order the driver received it (undecodable lines skipped)."""
    rows = []
    for line in (Path(run_dir) / ROWS_FILE).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def within_wall_clock(rows: Sequence[Mapping[str, Any]], start: float, budget_seconds: float) -> list[Mapping[str, Any]]:
    """The rows reported at most ``budget_seconds`` after ``start`` (the arm's start, set-up included).

    Ray stamps a row with whole seconds (rounded down), so a row may be counted up to a second late; the
    rule is the same for every arm.
    """
    return [r for r in rows if _finite(r.get("timestamp")) and r["timestamp"] - start <= budget_seconds]


def trial_epochs(rows: Sequence[Mapping[str, Any]], epochs_per_round: int) -> int:
    """Trial-epochs the rows stand for: each row is one round of one trial (``round_epochs`` long when
    macro mutations report it)."""
    return sum(int(r["round_epochs"]) if _finite(r.get("round_epochs")) else epochs_per_round for r in rows)


VALIDATION_OBJECTIVES = ("max:val_accuracy", "min:latency_ms")


def validation_front(rows: Sequence[Mapping[str, Any]], size: int = FRONT_SIZE) -> list[dict[str, Any]]:
    """What a user takes home from the rows: the Pareto front of (val accuracy, latency) over every
    architecture seen (snapshots included, one entry per architecture), chosen on validation alone.

    A front larger than ``size`` is thinned to ``size`` entries evenly spaced along it in latency order,
    both ends kept (the most accurate and the fastest). Best val accuracy first.
    """
    front = pareto_front(list(rows) + snapshot_rows(rows), VALIDATION_OBJECTIVES)
    if len(front) > size:
        by_latency = sorted(front, key=lambda entry: entry["latency_ms"])
        picks = sorted({round(i * (len(front) - 1) / (size - 1)) for i in range(size)})
        front = sorted((by_latency[i] for i in picks), key=lambda entry: -entry["val_accuracy"])
    return front


def seen_points(rows: Sequence[Mapping[str, Any]], start: float) -> list[list[float]]:
    """[seconds since ``start``, val accuracy, latency] of every valid row: the anytime curve's input."""
    return [[max(0.0, r["timestamp"] - start), r["val_accuracy"], r["latency_ms"]] for r in _valid(rows)
            if _finite(r.get("latency_ms")) and _finite(r.get("timestamp"))]


# -- scoring what arms delivered ---------------------------------------------------------------------------
def delivered(models: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Retrained models with a test accuracy, a latency and a peak memory."""
    return [m for m in models if all(_finite(m.get(k)) for k in ("test_accuracy", "latency_ms", "peak_memory_mb"))]


def pooled_bounds(models: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per axis (test error, latency, memory), the [min, max] over ``models``: every arm and seed of a dataset."""
    models = delivered(models)
    axes = {"test_error": [1 - m["test_accuracy"] for m in models],
            **{metric: [m[metric] for m in models] for metric in COSTS.values()}}
    return {axis: [min(values), max(values)] if values else [0.0, 1.0] for axis, values in axes.items()}


def _scaled(value: float, bounds: Sequence[float]) -> float:
    low, high = bounds
    return (value - low) / (high - low) if high > low else 0.0


def normalised_hypervolume(models: Iterable[Mapping[str, Any]], metric: str, bounds: Mapping[str, Sequence[float]],
                           reference: Sequence[float] = REFERENCE_POINT) -> float:
    """Area dominated by the models' (test error, ``metric``) points, each axis scaled to [0, 1] by
    ``bounds``, inside ``reference``. 0 for no model."""
    points = [(_scaled(1 - m["test_accuracy"], bounds["test_error"]), _scaled(m[metric], bounds[metric]))
              for m in delivered(models)]
    return hypervolume_2d(np.asarray(points, dtype=float).reshape(-1, 2), reference)


def best_within(models: Iterable[Mapping[str, Any]], latency_ms: float) -> float | None:
    """The best test accuracy among models no slower than ``latency_ms``; None if none is."""
    return max((m["test_accuracy"] for m in delivered(models) if m["latency_ms"] <= latency_ms), default=None)


def latency_at_matched_accuracy(search: Iterable[Mapping[str, Any]],
                                baseline: Iterable[Mapping[str, Any]]) -> float | None:
    """At the baseline's best test accuracy: the lowest latency of the search's models at least as accurate,
    over the baseline's latency there (its fastest model of that accuracy). Below 1: the search delivers
    that accuracy faster.

    ``math.inf`` when no search model reaches that accuracy (a non-match: the search cannot deliver it at
    any latency); None when the baseline delivered nothing.
    """
    search, baseline = delivered(search), delivered(baseline)
    if not baseline:
        return None
    target = max(m["test_accuracy"] for m in baseline)
    at_target = min(m["latency_ms"] for m in baseline if m["test_accuracy"] == target)
    matching = [m["latency_ms"] for m in search if m["test_accuracy"] >= target]
    return min(matching) / at_target if matching else math.inf


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; inf over a zero denominator, None when either is missing or both are 0."""
    if numerator is None or denominator is None:
        return None
    if denominator == 0:
        return math.inf if numerator > 0 else None
    return numerator / denominator


def anytime_hypervolume(seen: Sequence[Sequence[float]], seconds: Sequence[float],
                        bounds: Mapping[str, Sequence[float]]) -> list[float]:
    """At each of ``seconds``, the normalised hypervolume of (val error, latency) of every row seen by then."""
    curve = []
    for t in seconds:
        points = [(_scaled(1 - acc, bounds["val_error"]), _scaled(lat, bounds["latency_ms"]))
                  for when, acc, lat in seen if when <= t]
        curve.append(hypervolume_2d(np.asarray(points, dtype=float).reshape(-1, 2), REFERENCE_POINT))
    return curve


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _valid(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if not r.get("diverged") and _finite(r.get("val_accuracy"))]


# -- summarising a dataset ---------------------------------------------------------------------------------
def describe(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, min and max over the seeds where the value exists, and every value."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    stats: dict[str, Any] = {"per_seed": [v if v is not None and math.isfinite(v) else None for v in values],
                             "n": len(present), "of": len(values)}
    if present:
        stats.update(mean=float(np.mean(present)), min=min(present), max=max(present))
    return stats


def latency_budgets(record: Mapping[str, Any]) -> list[float]:
    """The seed's latency budgets in ms: ``LATENCY_BUDGETS`` times the hand-written network's latency, measured
    with the seed's models (so under the same conditions)."""
    return [multiple * record["handwritten_latency_ms"] for multiple in LATENCY_BUDGETS]


def score_seed(runs: Mapping[str, Mapping[str, Any]], bounds: Mapping[str, Sequence[float]],
               budgets_ms: Sequence[float]) -> dict[str, dict[str, Any]]:
    """Per arm of one seed: its normalised hypervolumes, best test accuracy overall and within each budget."""
    scores = {}
    for arm, run in runs.items():
        models = run["models"]
        scores[arm] = {
            **{f"hv_{cost}": normalised_hypervolume(models, metric, bounds) for cost, metric in COSTS.items()},
            "best_test_accuracy": max((m["test_accuracy"] for m in delivered(models)), default=None),
            "best_within_budgets": [best_within(models, budget) for budget in budgets_ms],
        }
    return scores


def estimate_agreement(models: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How well the latency and memory the arms ranked on (the row's figures: the run's cost-model
    estimates) agree with the measurement of the same architectures here: Kendall tau, and the median and
    largest relative error, over the distinct architectures of every arm's front."""
    from spidernet_ray.results import agreement

    distinct = {m["genome_hash"]: m for m in models if _finite(m.get("search_latency_ms")) and _finite(m.get("latency_ms"))}
    return {"architectures": len(distinct),
            **{metric: agreement([m[f"search_{metric}"] for m in distinct.values()],
                                 [m[metric] for m in distinct.values()])
               for metric in ("latency_ms", "peak_memory_mb")}}


def summarise_dataset(per_seed: Sequence[Mapping[str, Any]], budget_seconds: float) -> dict[str, Any]:
    """The per-dataset block of compare.json: ratio statistics per baseline, figures per arm, anytime curves."""
    models = [m for record in per_seed for run in record["runs"].values() for m in run["models"]]
    bounds = pooled_bounds(models)
    scores = [score_seed(record["runs"], bounds, latency_budgets(record)) for record in per_seed]
    ratios = {}
    for baseline in BASELINES:
        ratios[baseline] = {
            f"hv_{cost}_ratio": ratio_summary([ratio(s["spidernet"][f"hv_{cost}"], s[baseline][f"hv_{cost}"])
                                               for s in scores]) for cost in COSTS}
        matched = [latency_at_matched_accuracy(r["runs"]["spidernet"]["models"], r["runs"][baseline]["models"])
                   for r in per_seed]
        ratios[baseline]["latency_at_matched_accuracy_ratio"] = {
            **ratio_summary(matched), "unmatched_seeds": [r["seed"] for r, m in zip(per_seed, matched) if m == math.inf]}
    arms = {}
    for arm in ARMS:
        runs = [record["runs"][arm] for record in per_seed]
        arms[arm] = {
            **{f"hv_{cost}": describe([s[arm][f"hv_{cost}"] for s in scores]) for cost in COSTS},
            "best_test_accuracy": describe([s[arm]["best_test_accuracy"] for s in scores]),
            "best_within_budgets": [describe([s[arm]["best_within_budgets"][k] for s in scores])
                                    for k in range(len(LATENCY_BUDGETS))],
            **{key: describe([run[key] for run in runs]) for key in (
                "trial_epochs_within", "trial_epochs_reported", "rows_cut", "members", "architectures",
                "wall_seconds", "first_row_seconds")},
            "models_delivered": describe([len(delivered(run["models"])) for run in runs]),
        }
    seen = [p for record in per_seed for run in record["runs"].values() for p in run["seen"]]
    seen_bounds = {"val_error": [min((1 - p[1] for p in seen), default=0.0), max((1 - p[1] for p in seen), default=1.0)],
                   "latency_ms": [min((p[2] for p in seen), default=0.0), max((p[2] for p in seen), default=1.0)]}
    seconds = [budget_seconds * k / 20 for k in range(21)]
    anytime = {"seconds": seconds, "bounds": seen_bounds}
    for arm in ARMS:
        curves = np.array([anytime_hypervolume(record["runs"][arm]["seen"], seconds, seen_bounds)
                           for record in per_seed])
        anytime[arm] = {"mean": curves.mean(axis=0).tolist(), "min": curves.min(axis=0).tolist(),
                        "max": curves.max(axis=0).tolist()}
    return {"ratios": ratios, "arms": arms, "bounds": bounds, "anytime": anytime,
            "estimates": estimate_agreement(models),
            "latency_budget_multiples": list(LATENCY_BUDGETS),
            "latency_budgets_ms": np.median([latency_budgets(r) for r in per_seed], axis=0).tolist(),
            "scores": [{"seed": r["seed"], **s} for r, s in zip(per_seed, scores)]}


# -- running -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineArgumentParser(prog="compare.py", description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", choices=list(PLANS), help="default: all (--quick: digits)")
    p.add_argument("--seeds", nargs="+", type=int, help="the same seeds for every dataset (default: each plan's)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK}, population {QUICK_POPULATION}, written to --output")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray, shared by every arm")
    p.add_argument("--fashion-root", type=Path, default=FASHION_ROOT)
    p.add_argument("--output", type=Path, help=f"default: {RESULTS} (--quick: a temporary directory)")
    p.add_argument("--storage", type=Path, help="where the runs go (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the runs' directories")
    p.add_argument("--render", action="store_true", help="only rewrite compare.md and the plots from compare.json")
    p.add_argument("--reading", type=Path, help="markdown file with the reading of the results, kept in compare.json")
    args = p.parse_args(argv)
    if args.datasets is None:
        args.datasets = ["digits"] if args.quick else list(PLANS)
    return args


def dataset_plan(name: str, args: argparse.Namespace) -> Plan:
    plan = PLANS[name]
    search = dict(plan.search)
    if name == "fashion_mnist":
        search["data_root"] = str(args.fashion_root)
    plan = dataclasses.replace(plan, search=search)
    if args.quick:
        plan = dataclasses.replace(plan, search={**search, "population": QUICK_POPULATION}, **QUICK)
    if args.seeds:
        plan = dataclasses.replace(plan, seeds=tuple(args.seeds))
    return plan


def arm_order(seed: int) -> list[str]:
    """The arms, rotated by the seed."""
    k = seed % len(ARMS)
    return [*ARMS[k:], *ARMS[:k]]


def search_config(plan: Plan, arm: str, seed: int, storage: Path):
    from spidernet_ray.config import SearchConfig

    rounds = plan.random_rounds if arm == "random" else ROUNDS
    return SearchConfig(**plan.search, strategy=arm, seed=seed, rounds=rounds, time_budget_s=plan.budget_seconds,
                        storage_path=str(storage), name=f"{plan.search['dataset']}-{arm}-seed{seed}").validate()


def run_arm(config, budget_seconds: float) -> dict[str, Any]:
    """One launcher run and what it delivers: its validation front, within the equal-wall-clock cut."""
    from spidernet_ray.tuner import run_search

    start = time.time()
    code = run_search(config)  # the one call into the product
    wall = time.time() - start
    path = config.experiment_path
    rows = arrival_rows(path) if (path / ROWS_FILE).exists() else []
    kept = within_wall_clock(rows, start, budget_seconds)
    keep = ("genome_hash", "genome", "trial_id", "training_iteration", "val_accuracy", "latency_ms", "peak_memory_mb",
            "params")
    return {
        "exit_code": code, "wall_seconds": wall,
        "first_row_seconds": min((r["timestamp"] - start for r in rows if _finite(r.get("timestamp"))), default=None),
        "rows_reported": len(rows), "rows_cut": len(rows) - len(kept),
        "trial_epochs_reported": trial_epochs(rows, config.epochs_per_round),
        "trial_epochs_within": trial_epochs(kept, config.epochs_per_round),
        "members": len({r.get("trial_id") for r in kept}),
        "architectures": len({r.get("genome_hash") for r in kept if r.get("genome_hash")}),
        "front": [{k: entry.get(k) for k in keep} for entry in validation_front(kept)],
        "seen": seen_points(kept, start),
    }


def retrain_splits(config, test_examples: int | None):
    """The search's own train/validation split, and the test split the retrained models are scored on."""
    from spidernet_ray.data import load_dataset, stratified_order

    splits = load_dataset(config.dataset, config.data_root, seed=config.seed, val_fraction=config.val_fraction,
                          subset=config.subset)
    if test_examples is None:
        return splits
    full = load_dataset(config.dataset, config.data_root, seed=config.seed, val_fraction=config.val_fraction)
    chosen = np.sort(stratified_order(full.y_test, np.random.default_rng(0))[:test_examples])  # seed-independent
    return dataclasses.replace(splits, x_test=full.x_test[chosen], y_test=full.y_test[chosen])


def retrain(genomes: Mapping[str, str], splits, recipe, storage: Path, cpus_per_trial: float = 1) -> dict[str, dict]:
    """Retrain every genome from scratch under ``recipe`` (``spidernet_ray.retrain``'s trial), in parallel on
    the local Ray: its test accuracy, retrain val accuracy and error, by genome hash."""
    from ray import tune

    from spidernet_ray.retrain import retrain_trial

    trainable = tune.with_resources(tune.with_parameters(retrain_trial, splits=splits, genomes=dict(genomes)),
                                    {"cpu": cpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        param_space={"genome_hash": tune.grid_search(sorted(genomes)), "recipe": dataclasses.asdict(recipe)},
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True,
                                    trial_dirname_creator=lambda trial: f"retrain_{trial.config['genome_hash']}"),
        run_config=tune.RunConfig(name="retrain", storage_path=str(storage), verbose=0),
    )
    outcome = {}
    for result in tuner.fit():
        metrics = result.metrics or {}
        outcome[result.config["genome_hash"]] = {
            "test_accuracy": metrics.get("test_accuracy"), "retrain_val_accuracy": metrics.get("val_accuracy"),
            "error": str(result.error).splitlines()[0] if result.error else
            ("" if "test_accuracy" in metrics else "stopped before the test")}
    return outcome


def measure_models(genomes: Mapping[str, str], input_shape, batch_size: int) -> dict[str, dict]:
    """Latency (batch 1, one thread, median of 30 after 5 warm-up) and peak training memory of each
    architecture, measured here one at a time: the same way for every arm. Weights do not change either."""
    import torch

    from spidernet_ray.genome import Genome
    from spidernet_ray.hardware import measure
    from spidernet_ray.supernet import DiscreteNet
    from spidernet_ray.train import TRAINING_LAYOUT

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a trial with one CPU runs it
    try:
        return {key: measure(DiscreteNet(Genome.from_json(genome)).to(memory_format=TRAINING_LAYOUT), input_shape,
                             batch_size, "cpu", warmup=5, repeats=30, disposable=True).to_dict()
                for key, genome in sorted(genomes.items())}
    finally:
        torch.set_num_threads(threads)


def handwritten(config, splits) -> str:
    """The hand-written network (stock PBT's), whose latency the latency budgets are multiples of: genome JSON."""
    from spidernet_ray.baselines import handwritten_genome

    return handwritten_genome(splits, config).to_json()


def run_seed(plan: Plan, seed: int, storage: Path, keep: bool) -> dict[str, Any]:
    """Every arm of one seed, then every front retrained and measured."""
    from spidernet_ray.retrain import Recipe

    runs, configs = {}, {}
    for arm in arm_order(seed):
        configs[arm] = config = search_config(plan, arm, seed, storage)
        print(f"\n=== {config.dataset} seed {seed}: {arm} ({plan.budget_seconds:g} s) ===", flush=True)
        runs[arm] = run_arm(config, plan.budget_seconds)
        if not keep:
            shutil.rmtree(config.experiment_path, ignore_errors=True)
    config = configs["spidernet"]
    genomes = {entry["genome_hash"]: entry["genome"] for run in runs.values() for entry in run["front"]}
    splits = retrain_splits(config, plan.test_examples)
    recipe = Recipe(epochs=plan.retrain_epochs, batch_size=config.batch_size, seed=seed).validate()
    started = time.time()
    print(f"\n=== {config.dataset} seed {seed}: retraining {len(genomes)} models, {recipe.epochs} epochs ===", flush=True)
    trained = retrain(genomes, splits, recipe, storage / f"{config.dataset}-seed{seed}-retrain") if genomes else {}
    reference = handwritten(config, splits)
    measured = measure_models({**genomes, "handwritten": reference}, splits.input_shape, config.batch_size)
    for run in runs.values():
        run["models"] = [{**{k: v for k, v in entry.items() if k != "genome"},
                          "search_latency_ms": entry["latency_ms"], "search_peak_memory_mb": entry["peak_memory_mb"],
                          **trained.get(entry["genome_hash"], {}),
                          **{k: measured[entry["genome_hash"]][k] for k in ("latency_ms", "latency_spread_ms",
                                                                             "peak_memory_mb", "params", "flops")}}
                         for entry in run.pop("front")]
    if not keep:
        shutil.rmtree(storage / f"{config.dataset}-seed{seed}-retrain", ignore_errors=True)
    return {"seed": seed, "order": arm_order(seed), "runs": runs, "retrain_seconds": time.time() - started,
            "handwritten_latency_ms": measured["handwritten"]["latency_ms"],
            "test_examples": len(splits.y_test), "val_examples": len(splits.y_val),
            "train_examples": len(splits.y_train)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import ray
    import torch

    from spidernet_ray.tuner import start_ray

    args = parse_args(argv)
    output = args.output or (Path(tempfile.mkdtemp(prefix="compare-quick-")) if args.quick else RESULTS)
    if args.render:
        return render(output, args.reading)
    storage = args.storage or Path(tempfile.mkdtemp(prefix="compare-runs-"))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    start_ray(None, args.cpus, 0, 0)  # once: every arm and retrain runs on this Ray
    started, load_start = time.time(), os.getloadavg()[0]
    report: dict[str, Any] = {"datasets": {}}
    if args.reading:
        report["reading"] = args.reading.read_text().strip()
    output.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        plan = dataset_plan(name, args)
        per_seed = []
        for seed in plan.seeds:
            per_seed.append(run_seed(plan, seed, storage, args.keep))
            report["datasets"][name] = {
                "seeds": [r["seed"] for r in per_seed], "budget_seconds": plan.budget_seconds,
                "plan": dataclasses.asdict(plan), "reference_point": list(REFERENCE_POINT), "front_size": FRONT_SIZE,
                **summarise_dataset(per_seed, plan.budget_seconds), "per_seed": per_seed,
            }
            report["settings"] = settings(args, started, load_start, ray.__version__, torch.__version__)
            write(report, output)  # after every seed, so a run cut short keeps what it finished
        plot_dataset(name, report["datasets"][name], output)
    print(markdown(report))
    print(f"written: {output}")
    if not args.keep and args.storage is None:
        shutil.rmtree(storage, ignore_errors=True)
    return report


def settings(args: argparse.Namespace, started: float, load_start: float, ray_version: str,
             torch_version: str) -> dict[str, Any]:
    command = ["python benchmarks/compare.py", *(["--quick"] if args.quick else []),
               f"--datasets {' '.join(args.datasets)}", *([f"--seeds {' '.join(map(str, args.seeds))}"] if args.seeds
                                                          else []), f"--cpus {args.cpus}"]
    return {"command": " ".join(command), "cpus": args.cpus, "os_cpus": os.cpu_count(),
            "load_average_start": load_start, "load_average_end": os.getloadavg()[0],
            "total_minutes": (time.time() - started) / 60, "ray": ray_version, "torch": torch_version,
            "machine": platform.machine(), "code": code_version(("spidernet_ray", "benchmarks")),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "calibration": CALIBRATION}


def write(report: Mapping[str, Any], output: Path) -> None:
    (output / "compare.json").write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    (output / "compare.md").write_text(markdown(report))


def render(output: Path, reading: Path | None) -> dict[str, Any]:
    """Rewrite compare.md and the plots from compare.json (with a new reading, kept in compare.json)."""
    report = json.loads((output / "compare.json").read_text())
    if reading is not None:
        report["reading"] = reading.read_text().strip()
    write(report, output)
    for name, block in report["datasets"].items():
        plot_dataset(name, block, output)
    return report


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- reporting -------------------------------------------------------------------------------------------------
COLORS = {"spidernet": "tab:blue", "random": "tab:orange", "random_asha": "tab:red", "pbt": "tab:green"}
LABELS = {"spidernet": "SpiderNet", "random": "random search", "random_asha": "random + ASHA", "pbt": "stock PBT"}


def plot_dataset(name: str, block: Mapping[str, Any], output: Path) -> None:
    """``compare_<name>_test_fronts.png``: every retrained model on test, each seed's front a step line;
    ``compare_<name>_anytime.png``: the anytime hypervolume on validation, mean over seeds and its range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True, constrained_layout=True)
    for axis, (cost, metric) in zip(axes, COSTS.items()):
        for arm in ARMS:
            for index, record in enumerate(block["per_seed"]):
                models = delivered(record["runs"][arm]["models"])
                if not models:
                    continue
                points = sorted((m[metric], 100 * (1 - m["test_accuracy"])) for m in models)
                front = [points[0]]
                for x, y in points[1:]:
                    if y < front[-1][1]:
                        front.append((x, y))
                xs, ys = zip(*points)
                axis.scatter(xs, ys, s=12, color=COLORS[arm], alpha=0.35, linewidths=0)
                fx, fy = zip(*front)
                axis.step(fx, fy, where="post", color=COLORS[arm], alpha=0.5, linewidth=1,
                          label=LABELS[arm] if index == 0 else None)
        if cost == "latency":
            for multiple, budget in zip(block["latency_budget_multiples"], block["latency_budgets_ms"]):
                axis.axvline(budget, color="0.4", linestyle=":", linewidth=1)
                axis.annotate(f"{multiple:g}x hand-written (median)", (budget, 1), xycoords=("data", "axes fraction"),
                              fontsize=8, rotation=90, va="top", ha="right", color="0.4")
        axis.set_xlabel({"latency": "latency, batch 1, one thread (ms)", "memory": "peak training memory (MB)"}[cost])
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:  # an arm that delivered nothing has no line
            axis.legend(fontsize=9)
    axes[0].set_ylabel("test error of the retrained model (%)")
    figure.suptitle(f"{name}: what each arm delivered (validation fronts retrained, on test), every seed")
    figure.savefig(output / f"compare_{name}_test_fronts.png", dpi=110)
    plt.close(figure)

    anytime = block["anytime"]
    figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for arm in ARMS:
        curve = anytime[arm]
        axis.plot(anytime["seconds"], curve["mean"], color=COLORS[arm], label=LABELS[arm])
        axis.fill_between(anytime["seconds"], curve["min"], curve["max"], color=COLORS[arm], alpha=0.12)
    axis.set_xlabel("seconds since the arm's start (set-up included)")
    axis.set_ylabel("normalised hypervolume, (val error, latency)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=9)
    axis.set_title(f"{name}: everything seen on validation, mean over seeds [min, max]")
    figure.savefig(output / f"compare_{name}_anytime.png", dpi=110)
    plt.close(figure)


def _fmt(stats: Mapping[str, Any], spec: str = ".3f", scale: float = 1.0) -> str:
    if not stats.get("n"):
        return "n/a"
    text = f"{stats['mean'] * scale:{spec}}"
    if stats["of"] > 1:
        text += f" [{stats['min'] * scale:{spec}}, {stats['max'] * scale:{spec}}]"
    if stats["n"] < stats["of"]:
        text += f" ({stats['n']} of {stats['of']})"
    return text


def _ratio_line(label: str, stats: Mapping[str, Any]) -> str:
    if stats["mean"] is None:
        return f"| {label} | n/a | | | |"
    per_seed = ", ".join("-" if v is None else f"{v:.2f}" for v in stats["per_seed"])
    unmatched = stats.get("unmatched_seeds")
    if unmatched:
        per_seed += f"; no match: seed {', '.join(map(str, unmatched))}"
    p = "n/a" if stats["p_value"] is None else f"{stats['p_value']:.3g}"
    return (f"| {label} | {stats['mean']:.3f} | [{stats['ci95_low']:.3f}, {stats['ci95_high']:.3f}] | {p} "
            f"| {per_seed} |")


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if _finite(value) else "n/a"


def markdown(report: Mapping[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# What each search delivers at equal wall-clock: SpiderNet, random search, random search + ASHA, stock PBT",
        "",
        f"{s['date']}, {s['os_cpus']}-core CPU machine (load average {s['load_average_start']:.1f} at the start, "
        f"{s['load_average_end']:.1f} at the end), one local Ray with {s['cpus']} CPUs for every arm, Ray {s['ray']}, "
        f"torch {s['torch']}, code {s['code']}. Total wall time {s['total_minutes']:.1f} min.",
        "",
        "How it is scored. Every arm gets the same wall-clock seconds (Tune's `time_budget_s`; rounds never end "
        "a run), and its rows are cut at that budget from the arm's own start, set-up included. Its final "
        "validation front, the Pareto front of (val accuracy, latency) within the cut, at most "
        f"{FRONT_SIZE} models chosen on validation only, is retrained from scratch under one recipe "
        "(`spidernet_ray.retrain`), evaluated on the test split, and measured in the driver one model at a "
        "time (latency at batch 1 on one thread, peak memory of a training step). Hypervolumes are over "
        "(test error, latency) and (test error, peak memory) of those models, each axis normalised by its min "
        "and max over every model of every arm and seed of the dataset, against the reference point "
        f"({REFERENCE_POINT[0]:g}, {REFERENCE_POINT[1]:g}). Latency budgets are fixed multiples of the "
        "hand-written network's latency. *Latency at matched accuracy*: take the baseline's best test "
        "accuracy and its fastest model at that accuracy; among the search's models at least that accurate, "
        "the lowest latency, divided by the baseline's. When no search model is that accurate (a non-match) "
        "the seed is left out of the mean and interval and counted as the worst possible ratio in the "
        "Wilcoxon test; non-matched seeds are listed. Ratios are search / baseline per seed: the mean, a 95 % "
        "percentile-bootstrap interval of the mean, and the two-sided exact Wilcoxon signed-rank p-value on "
        "the log ratios (with n seeds the smallest possible p is 2/2^n). Hypervolume ratios above 1 and "
        "latency ratios below 1 favour the search.",
        "",
        f"Sizes and calibration: {s.get('calibration', '')}",
        "",
    ]
    for name, block in report["datasets"].items():
        plan, arms = block["plan"], block["arms"]
        search = plan["search"]
        first = block["per_seed"][0]
        lines += [
            f"## {name}",
            "",
            f"{block['budget_seconds']:g} s per arm; seeds {block['seeds']}; population {search['population']}, "
            f"C={search['channels']}, {search['reductions']} reductions, batch {search['batch_size']}, "
            f"{search['epochs_per_round']} epoch(s) per round; random search trains each member "
            f"{plan['random_rounds']} rounds; {first['train_examples']} training, {first['val_examples']} "
            f"validation and {first['test_examples']} test images; retrain {plan['retrain_epochs']} epochs. "
            "Latency budgets: " + ", ".join(f"{m:g}x" for m in block["latency_budget_multiples"])
            + " the hand-written network's latency, measured with each seed's models (median "
            + ", ".join(f"{b:.3f}" for b in block["latency_budgets_ms"]) + " ms).",
            "",
            "| search / baseline | mean | 95 % CI | Wilcoxon p | per seed |",
            "|---|---:|---|---:|---|",
        ]
        for baseline in BASELINES:
            r = block["ratios"][baseline]
            lines += [_ratio_line(f"hypervolume (test error, latency) vs {LABELS[baseline]}", r["hv_latency_ratio"]),
                      _ratio_line(f"hypervolume (test error, memory) vs {LABELS[baseline]}", r["hv_memory_ratio"]),
                      _ratio_line(f"latency at matched accuracy vs {LABELS[baseline]}",
                                  r["latency_at_matched_accuracy_ratio"])]
        lines += ["", "Per arm, mean [min, max] over seeds:", "",
                  "| | " + " | ".join(LABELS[a] for a in ARMS) + " |", "|---|" + "---:|" * len(ARMS)]
        rows = [("normalised hypervolume (test error, latency)", "hv_latency", ".3f", 1),
                ("normalised hypervolume (test error, memory)", "hv_memory", ".3f", 1),
                ("best test accuracy (%)", "best_test_accuracy", ".2f", 100)]
        for label, key, spec, scale in rows:
            lines.append(f"| {label} | " + " | ".join(_fmt(arms[a][key], spec, scale) for a in ARMS) + " |")
        for k, multiple in enumerate(block["latency_budget_multiples"]):
            lines.append(f"| best test accuracy within {multiple:g}x the hand-written network's latency (%) | "
                         + " | ".join(_fmt(arms[a]["best_within_budgets"][k], ".2f", 100) for a in ARMS) + " |")
        for label, key, spec in [("models delivered", "models_delivered", ".1f"),
                                 ("members trained within the budget", "members", ".1f"),
                                 ("architectures seen within the budget", "architectures", ".1f"),
                                 ("trial-epochs within the budget", "trial_epochs_within", ".1f"),
                                 ("trial-epochs reported (all)", "trial_epochs_reported", ".1f"),
                                 ("rows cut (reported after the budget)", "rows_cut", ".1f"),
                                 ("first row after (s)", "first_row_seconds", ".1f"),
                                 ("wall time of the arm (s)", "wall_seconds", ".1f")]:
            lines.append(f"| {label} | " + " | ".join(_fmt(arms[a][key], spec) for a in ARMS) + " |")
        estimates = block.get("estimates")
        if estimates:
            lines += ["", f"Estimates the arms ranked on against measurement here ({estimates['architectures']} "
                      "distinct front architectures, every arm): " + "; ".join(
                          f"{name_} Kendall tau {_num(estimates[key]['kendall_tau'], '+.2f')}, relative error median "
                          f"{_num(estimates[key]['median_error'], '.1%')}, largest {_num(estimates[key]['largest_error'], '.1%')}"
                          for key, name_ in (("latency_ms", "latency"), ("peak_memory_mb", "peak memory")))]
        lines += ["", f"![{name}: retrained fronts on test](compare_{name}_test_fronts.png)", "",
                  f"![{name}: anytime hypervolume on validation](compare_{name}_anytime.png)", ""]
    commands = report["settings"]["command"]
    lines += ["## Reading", "", report.get("reading", "(see the report of the run)"), "", "Produced by:", "", "```",
              commands, "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
