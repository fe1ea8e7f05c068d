"""SpiderNet against random search and stock PBT at equal compute, over seeds and datasets.

For each dataset and seed, three runs of the launcher on one local Ray (same CPUs, same data split,
same population x rounds x epochs_per_round): ``--strategy spidernet``, ``random`` (random
architectures from the same space, the same training recipe, no scheduler) and ``pbt`` (Ray Tune's
stock PopulationBasedTraining over lr and weight decay on one fixed hand-written network). The order
of the runs rotates with the seed, so a drift in the (shared) machine's load hits each alike.

Variants (issue 9, the search-space extensions): besides the three strategies, one ``--strategy
spidernet`` run per entry of ``VARIANTS``, which is SpiderNet with one extension turned on (channel
search, gradual pruning with architecture snapshots, macro mutations, crossover) and everything else
as the plain spidernet run. Each is scored like the strategies and compared with the plain spidernet
run of the same seed; the variants rotate with the strategies.

Equal compute is accounted on the rows each run wrote: every reported row is one round of one trial,
of ``epochs_per_round`` epochs, or of its ``round_epochs`` when macro mutations make a deeper or
narrower network train longer. Each run is cut, in the order its rows reached the driver, at the
first row that would take it past the common budget of population x rounds x epochs_per_round
trial-epochs (PBT-style clones inherit their donor's round count, so a run can report a row more or
fewer than that). Everything below is computed on the rows within the budget, together with the
architecture snapshots those rows carry (gradual pruning): a snapshot is taken during a counted
round, so it costs no trial-epochs of its own, and it competes for the fronts and the best model
like a row.

Per run: the hypervolume of the (val error, latency) front and of the (val error, peak memory) front
of every row, against a reference point fixed per dataset (``REFERENCES``); the best row by val
accuracy, its params, latency and memory; that architecture retrained from scratch under one fixed
recipe (``spidernet_ray.retrain``) and its test accuracy (the only use of the test split); the wall
time of the run; the time from the run's start until its best val accuracy so far first reached random
search's final best of the same seed. Ratios spidernet/random and spidernet/pbt per seed, with their
spread, and per variant its ratios to plain SpiderNet. Writes ``results/compare.json``, ``compare.md``
and one front plot per dataset (the three strategies).

    python benchmarks/compare.py                                      # full run: strategies + variants, 2 datasets, 3 seeds
    python benchmarks/compare.py --quick                              # smoke run: tiny, one seed, to /tmp
    python benchmarks/compare.py --datasets digits --seeds 0 1 2
    python benchmarks/compare.py --variants crossover macro_mutations # the strategies and two variants
    python benchmarks/compare.py --variants                           # the strategies only (also: --variants none)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from spidernet_ray.genome import Genome
from spidernet_ray.pareto import nondominated_sort
from spidernet_ray.results import hypervolume_of, snapshot_rows
from spidernet_ray.rundir import ROWS_FILE
from provenance import code_version  # benchmarks/provenance.py, beside this script

RESULTS = Path(__file__).resolve().parent / "results"
FASHION_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
STRATEGIES = ("spidernet", "random", "pbt")
FRONTS = {"latency": "latency_ms", "memory": "peak_memory_mb"}

# One search per (dataset, strategy, seed). Sized for a busy 2-core machine: the whole run in about 40 minutes.
DATASETS: dict[str, dict[str, Any]] = {
    "digits": {"dataset": "digits", "channels": 8, "reductions": 2, "population": 4, "rounds": 4,
               "epochs_per_round": 1, "batch_size": 64},
    "fashion_mnist": {"dataset": "fashion_mnist", "subset": 800, "channels": 4, "reductions": 2,
                      "population": 4, "rounds": 4, "epochs_per_round": 1, "batch_size": 64},
}
# Hypervolume reference points, fixed per dataset before any run (val error 1.0 = every guess wrong;
# latency and memory well above anything the space holds at these sizes on this CPU). A point that
# is not inside the reference adds nothing; compare.json counts such rows.
REFERENCES: dict[str, dict[str, float]] = {
    "digits": {"val_error": 1.0, "latency_ms": 120.0, "peak_memory_mb": 60.0},
    "fashion_mnist": {"val_error": 1.0, "latency_ms": 200.0, "peak_memory_mb": 400.0},
}
RETRAIN_EPOCHS = {"digits": 8, "fashion_mnist": 4}
# SpiderNet with one search-space extension on (SearchConfig fields). Snapshots are taken after one epoch
# without pruning: a member has only rounds x epochs_per_round = 4 epochs here, so a longer wait would
# rarely come round.
# The strategies run the bare search, every extension off (channel search is on in the launcher's
# defaults since this comparison), so each variant shows one extension's effect on its own.
EXTENSIONS_OFF = {"channel_search": False, "gradual_pruning": False, "macro_mutations": False, "crossover": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "channel_search": {"channel_search": True},
    "gradual_pruning": {"gradual_pruning": True, "snapshot_stable_epochs": 1},
    # Half the clones (the launcher's default is 0.3): a run has only about three exploits, and at 0.3 most
    # runs would never carry out the mechanism being compared.
    "macro_mutations": {"macro_mutations": True, "macro_probability": 0.5},
    "crossover": {"crossover": True, "crossover_probability": 0.5},
}
TARGETS = {"hypervolume_ratio_vs_random": ">= 1.2", "params_ratio_vs_random": "<= 0.7",
           "memory_ratio_vs_random": "<= 0.7", "time_to_target_ratio_vs_random": "<= 0.5",
           "best_val_accuracy": "spidernet >= random"}


# -- the accounting (pure functions on the rows a run wrote) -------------------------------------------
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


def round_epochs(row: Mapping[str, Any], epochs_per_round: int) -> int:
    """Epochs the round behind ``row`` trained: its ``round_epochs`` (reported with macro mutations on),
    else ``epochs_per_round``."""
    value = row.get("round_epochs")
    return int(value) if _finite(value) and value > 0 else epochs_per_round


def trial_epochs(rows: Sequence[Mapping[str, Any]], epochs_per_round: int) -> int:
    """Trial-epochs the rows stand for: each reported row is one round of one trial."""
    return sum(round_epochs(row, epochs_per_round) for row in rows)


def within_budget(rows: Sequence[Mapping[str, Any]], budget: int, epochs_per_round: int) -> list[Mapping[str, Any]]:
    """The rows, in arrival order, up to the first whose round would take the trial-epochs past ``budget``."""
    counted, spent = [], 0
    for row in rows:
        spent += round_epochs(row, epochs_per_round)
        if spent > budget:
            break
        counted.append(row)
    return counted


def with_snapshots(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``rows``, each followed by the architecture snapshots its round took (gradual pruning), stamped with
    the row's arrival time: the driver learns of a snapshot with the row that carries it."""
    scored: list[Mapping[str, Any]] = []
    for row in rows:
        scored.append(row)
        scored += [{**snapshot, "timestamp": row.get("timestamp")} for snapshot in snapshot_rows([row])]
    return scored


def scored_rows(rows: Sequence[Mapping[str, Any]], budget: int, epochs_per_round: int) -> list[Mapping[str, Any]]:
    """What a run is scored on: its rows within the budget and their snapshots."""
    return with_snapshots(within_budget(rows, budget, epochs_per_round))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _valid(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if not r.get("diverged") and _finite(r.get("val_accuracy"))]


def front_hypervolume(rows: Sequence[Mapping[str, Any]], metric: str, reference: Mapping[str, float]) -> float:
    """Area dominated by the rows' (val error, ``metric``) points inside the reference point."""
    return hypervolume_of(rows, ("max:val_accuracy", f"min:{metric}"),
                          reference=(reference["val_error"], reference[metric]))


def outside_reference(rows: Sequence[Mapping[str, Any]], reference: Mapping[str, float]) -> int:
    """Rows whose latency or memory is not inside the reference (they add nothing to a hypervolume)."""
    return sum(1 for r in _valid(rows) if any(not (_finite(r.get(m)) and r[m] < reference[m]) for m in FRONTS.values()))


def best_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row with the best val accuracy; ties go to fewer params, then to the earlier row."""
    valid = _valid(rows)
    if not valid:
        return None
    return min(enumerate(valid), key=lambda item: (-item[1]["val_accuracy"], item[1].get("params") or math.inf,
                                                   item[0]))[1]


def progress(rows: Sequence[Mapping[str, Any]], start: float) -> list[tuple[float, float]]:
    """(seconds since ``start``, best val accuracy so far) at each row that raised the best."""
    points, best = [], -math.inf
    for row in _valid(rows):
        if row["val_accuracy"] > best:
            best = row["val_accuracy"]
            points.append((max(0.0, float(row["timestamp"]) - start), best))
    return points


def time_to_target(points: Sequence[Sequence[float]], target: float) -> float | None:
    """Seconds until the best val accuracy so far first reached ``target``; None if it never did."""
    for seconds, best in points:
        if best >= target - 1e-12:
            return seconds
    return None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or not _finite(numerator) or not _finite(denominator):
        return None
    if denominator == 0:
        return None if numerator == 0 else math.inf
    return numerator / denominator


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, median, min, max and sample std over the seeds where the value exists, and every value."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    stats: dict[str, Any] = {"per_seed": [None if v is None or not math.isfinite(v) else v for v in values],
                             "n": len(present), "of": len(values)}
    if present:
        stats.update(mean=statistics.fmean(present), median=statistics.median(present), min=min(present),
                     max=max(present), std=statistics.stdev(present) if len(present) > 1 else 0.0)
    return stats


def evaluate_run(rows: Sequence[Mapping[str, Any]], *, start: float, budget: int, epochs_per_round: int,
                 reference: Mapping[str, float]) -> dict[str, Any]:
    """What one run scores on its rows within the budget and their snapshots (everything but the retrain
    and the target)."""
    counted = within_budget(rows, budget, epochs_per_round)
    scored = with_snapshots(counted)
    best = best_row(scored)
    return {
        "trial_epochs_reported": trial_epochs(rows, epochs_per_round),
        "trial_epochs_counted": trial_epochs(counted, epochs_per_round),
        "rows_counted": len(counted),
        "snapshots_counted": len(scored) - len(counted),
        "hypervolume_latency": front_hypervolume(scored, "latency_ms", reference),
        "hypervolume_memory": front_hypervolume(scored, "peak_memory_mb", reference),
        "rows_outside_reference": outside_reference(scored, reference),
        "best_val_accuracy": best["val_accuracy"] if best else None,
        "best": {k: (best or {}).get(k) for k in ("trial_id", "training_iteration", "val_accuracy", "params",
                                                   "latency_ms", "peak_memory_mb", "flops", "genome_hash", "snapshot")},
        "progress": progress(scored, start),
        "architectures": len({r.get("genome_hash") for r in scored if r.get("genome_hash")}),
        "activity": extension_activity(counted, epochs_per_round),
    }


def extension_activity(rows: Sequence[Mapping[str, Any]], epochs_per_round: int) -> dict[str, Any]:
    """What the search did in ``rows``, so a variant whose extension never acted shows: mutations asked for
    and carried out per kind (a split is carried out when one was chosen), ops deleted, channels removed,
    snapshots taken and rounds that trained longer than ``epochs_per_round``."""
    mutations: dict[str, list[int]] = {}
    for row in rows:
        try:
            mutation = json.loads(row.get("mutation") or "{}")
        except (TypeError, json.JSONDecodeError):
            continue
        if not isinstance(mutation, dict) or "kind" not in mutation:
            continue
        kind = mutation["kind"]
        done = bool(mutation.get("chosen")) if kind == "split" else bool(mutation.get("applied"))
        asked_done = mutations.setdefault(kind, [0, 0])
        asked_done[0] += 1
        asked_done[1] += done
    return {
        "mutations": {kind: {"asked": asked, "done": done} for kind, (asked, done) in sorted(mutations.items())},
        "ops_deleted": sum(int(r.get("ops_deleted") or 0) for r in rows),
        "channels_removed": sum(int(r.get("channels_removed") or 0) for r in rows),
        "snapshots": len(snapshot_rows(rows)),
        "longer_rounds": sum(1 for r in rows if round_epochs(r, epochs_per_round) > epochs_per_round),
    }


def compare_seed(runs: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios of one seed, and each strategy's time to reach random search's final best val accuracy."""
    target = runs["random"]["best_val_accuracy"]
    for run in runs.values():
        run["target_val_accuracy"] = target
        run["time_to_target_s"] = None if target is None else time_to_target(run["progress"], target)
    ours, rand, pbt = runs["spidernet"], runs["random"], runs["pbt"]
    return {
        "hypervolume_ratio_vs_random": {f: ratio(ours[f"hypervolume_{f}"], rand[f"hypervolume_{f}"]) for f in FRONTS},
        "hypervolume_ratio_vs_pbt": {f: ratio(ours[f"hypervolume_{f}"], pbt[f"hypervolume_{f}"]) for f in FRONTS},
        "params_ratio_vs_random": ratio(ours["best"]["params"], rand["best"]["params"]),
        "memory_ratio_vs_random": ratio(ours["best"]["peak_memory_mb"], rand["best"]["peak_memory_mb"]),
        "latency_ratio_vs_random": ratio(ours["best"]["latency_ms"], rand["best"]["latency_ms"]),
        "params_ratio_vs_pbt": ratio(ours["best"]["params"], pbt["best"]["params"]),
        "memory_ratio_vs_pbt": ratio(ours["best"]["peak_memory_mb"], pbt["best"]["peak_memory_mb"]),
        "time_to_target_ratio_vs_random": ratio(ours["time_to_target_s"], rand["time_to_target_s"]),
        "val_accuracy_difference_vs_random": difference(ours["best_val_accuracy"], target),
        "test_accuracy_difference_vs_random": difference(ours.get("test_accuracy"), rand.get("test_accuracy")),
    }


def compare_variant(variant: Mapping[str, Any], plain: Mapping[str, Any]) -> dict[str, Any]:
    """One seed's variant run against the plain spidernet run of the same seed."""
    return {
        "hypervolume_ratio": {f: ratio(variant[f"hypervolume_{f}"], plain[f"hypervolume_{f}"]) for f in FRONTS},
        "val_accuracy_difference": difference(variant["best_val_accuracy"], plain["best_val_accuracy"]),
        "params_ratio": ratio(variant["best"]["params"], plain["best"]["params"]),
        "memory_ratio": ratio(variant["best"]["peak_memory_mb"], plain["best"]["peak_memory_mb"]),
        "latency_ratio": ratio(variant["best"]["latency_ms"], plain["best"]["latency_ms"]),
        "test_accuracy_difference": difference(variant.get("test_accuracy"), plain.get("test_accuracy")),
        "wall_time_ratio": ratio(variant.get("wall_seconds"), plain.get("wall_seconds")),
        "trial_epochs_counted": variant["trial_epochs_counted"],
    }


VARIANT_FIGURES = ("val_accuracy_difference", "params_ratio", "memory_ratio", "latency_ratio",
                   "test_accuracy_difference", "wall_time_ratio")


def summarise_variants(seed_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per variant, its ratios to plain SpiderNet spread over the seeds, and what its extension did."""
    summary = {}
    for name in seed_rows[0].get("variant_ratios", {}) if seed_rows else ():
        ratios = [row["variant_ratios"][name] for row in seed_rows]
        runs = [row["variants"][name] for row in seed_rows]
        summary[name] = {
            "hypervolume_ratio": {f: spread([r["hypervolume_ratio"][f] for r in ratios]) for f in FRONTS},
            **{key: spread([r[key] for r in ratios]) for key in VARIANT_FIGURES},
            "trial_epochs_counted": [r["trial_epochs_counted"] for r in runs],
            "trial_epochs_reported": [r["trial_epochs_reported"] for r in runs],
            "snapshots_counted": [r.get("snapshots_counted", 0) for r in runs],
            "best_is_snapshot": [bool(r["best"].get("snapshot")) for r in runs],
            "activity": [r.get("activity") for r in runs],
        }
    return summary


def summarise_dataset(seed_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The per-dataset block of compare.json: ratio spreads over the seeds, per-strategy spreads, raw rows."""
    ratios = [row["ratios"] for row in seed_rows]
    summary: dict[str, Any] = {
        "seeds": [row["seed"] for row in seed_rows],
        "hypervolume_ratio_vs_random": {f: spread([r["hypervolume_ratio_vs_random"][f] for r in ratios]) for f in FRONTS},
        "hypervolume_ratio_vs_pbt": {f: spread([r["hypervolume_ratio_vs_pbt"][f] for r in ratios]) for f in FRONTS},
    }
    for key in ("params_ratio_vs_random", "memory_ratio_vs_random", "latency_ratio_vs_random", "params_ratio_vs_pbt",
                "memory_ratio_vs_pbt", "time_to_target_ratio_vs_random", "val_accuracy_difference_vs_random",
                "test_accuracy_difference_vs_random"):
        summary[key] = spread([r[key] for r in ratios])
    per_strategy = {}
    for strategy in STRATEGIES:
        runs = [row["runs"][strategy] for row in seed_rows]
        per_strategy[strategy] = {
            "hypervolume_latency": spread([r["hypervolume_latency"] for r in runs]),
            "hypervolume_memory": spread([r["hypervolume_memory"] for r in runs]),
            "best_val_accuracy": spread([r["best_val_accuracy"] for r in runs]),
            "best_params": spread([r["best"]["params"] for r in runs]),
            "best_latency_ms": spread([r["best"]["latency_ms"] for r in runs]),
            "best_peak_memory_mb": spread([r["best"]["peak_memory_mb"] for r in runs]),
            "test_accuracy": spread([r.get("test_accuracy") for r in runs]),
            "wall_seconds": spread([r.get("wall_seconds") for r in runs]),
            "time_to_target_s": spread([r["time_to_target_s"] for r in runs]),
            "trial_epochs_counted": [r["trial_epochs_counted"] for r in runs],
            "trial_epochs_reported": [r["trial_epochs_reported"] for r in runs],
        }
    summary["strategies"] = per_strategy
    variants = summarise_variants(seed_rows)
    if variants:
        summary["variants"] = variants
    summary["per_seed"] = list(seed_rows)
    return summary


# -- running ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="*", choices=[*VARIANTS, "none"],
                   help="SpiderNet variants to run beside the strategies (default: all; none: '--variants' alone)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: population 3, 2 rounds, 1 retrain epoch, seed 0, written to --output")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray, shared by every run")
    p.add_argument("--fashion-root", type=Path, default=FASHION_ROOT)
    p.add_argument("--output", type=Path, help=f"default: {RESULTS} (--quick: a temporary directory)")
    p.add_argument("--storage", type=Path, help="where the runs go (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the runs' directories")
    p.add_argument("--render", action="store_true",
                   help="only rewrite compare.md from --output's compare.json (and the plots, given --storage)")
    p.add_argument("--reading", type=Path, help="markdown file with the reading of the results, kept in compare.json")
    args = p.parse_args(argv)
    args.variants = list(VARIANTS) if args.variants is None else [v for v in args.variants if v != "none"]
    return args


def dataset_settings(name: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = dict(DATASETS[name])
    if name == "fashion_mnist":
        settings["data_root"] = str(args.fashion_root)
    if args.quick:  # population 3: the fewest at which a crossover finds a partner besides the clone and its donor
        settings.update(population=3, rounds=2, channels=4, subset=min(settings.get("subset") or 400, 400))
    return settings


def search_config(settings: Mapping[str, Any], arm: str, seed: int, storage: Path):
    """The launcher's config for one arm: a strategy, or a variant (spidernet with its ``VARIANTS`` fields)."""
    from spidernet_ray.config import SearchConfig

    strategy, extension = (arm, {}) if arm in STRATEGIES else ("spidernet", VARIANTS[arm])
    return SearchConfig(**settings, **{**EXTENSIONS_OFF, **extension}, strategy=strategy, seed=seed,
                        storage_path=str(storage),
                        name=run_name(settings["dataset"], arm, seed)).validate()


def run_name(dataset: str, arm: str, seed: int) -> str:
    return f"{dataset}-{arm}-seed{seed}" if arm in STRATEGIES else f"{dataset}-spidernet-{arm}-seed{seed}"


def run_strategy(config, *, budget: int, reference: Mapping[str, float], retrain_epochs: int) -> dict[str, Any]:
    """One launcher run, scored on its rows within the budget, its best architecture retrained."""
    from spidernet_ray.tuner import run_search

    start, clock = time.time(), time.perf_counter()
    code = run_search(config)
    wall = time.perf_counter() - clock
    rows = arrival_rows(config.experiment_path)
    run = evaluate_run(rows, start=start, budget=budget, epochs_per_round=config.epochs_per_round,
                       reference=reference)
    run.update(exit_code=code, wall_seconds=wall, splits_at_end=final_split_counts(rows, config.reductions))
    scored = scored_rows(rows, budget, config.epochs_per_round)
    # For the plot only (dropped before compare.json is written).
    run["front_rows"] = [{k: r.get(k) for k in ("val_accuracy", "latency_ms", "peak_memory_mb", "diverged")}
                         for r in scored]
    best = best_row(scored)
    if best is not None:
        run.update(retrain_best(config, best, retrain_epochs))
    return run


def final_split_counts(rows: Sequence[Mapping[str, Any]], reductions: int) -> list[int]:
    """Per trial, the splits its last supernet carries (internal nodes beyond the initial genome's one per cell;
    pruning can take a member below its count); 0 for the fixed network."""
    last: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        last[row["trial_id"]] = row
    counts = []
    for row in last.values():
        genome = Genome.from_json(row.get("supernet_genome") or row["genome"])
        counts.append(sum(len(cell.nodes) for cell in genome.cells) - (reductions + 1))
    return sorted(counts)


def retrain_best(config, best: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """Retrain ``best``'s architecture from scratch under the fixed recipe; its test accuracy."""
    from spidernet_ray import retrain
    from spidernet_ray.data import load_dataset

    genome = Genome.from_json(best["genome"])
    candidate = retrain.Candidate(
        genome_hash=genome.hash, genome=genome.to_json(), source_trial=str(best["trial_id"]),
        source_round=best.get("training_iteration"),
        search={k: best.get(k) for k in ("val_accuracy", "latency_ms", "peak_memory_mb", "params")},
    )
    splits = load_dataset(config.dataset, config.data_root, seed=config.seed, val_fraction=config.val_fraction,
                          subset=config.subset)
    recipe = retrain.Recipe(epochs=epochs, batch_size=config.batch_size, seed=config.seed,
                            latency_batch_size=config.latency_batch_size).validate()
    plan = retrain.Plan(run_dir=config.experiment_path, candidates=[candidate], recipe=recipe, splits=splits,
                        search_config=config)
    start = time.perf_counter()
    code = retrain.run(plan)
    row = next((r for r in retrain.read_retrain_table(config.experiment_path) if r["genome_hash"] == genome.hash), {})
    return {"test_accuracy": row.get("test_accuracy"), "retrain_val_accuracy": row.get("val_accuracy"),
            "retrain_params": row.get("params"), "retrain_epochs": epochs, "test_examples": row.get("test_examples"),
            "retrain_seconds": time.perf_counter() - start, "retrain_error": row.get("error") or ("" if code == 0 else
                                                                                                   f"exit {code}")}


def arm_order(seed: int, variants: Sequence[str] = ()) -> list[str]:
    """The three strategies, then the variants, rotated by the seed."""
    arms = [*STRATEGIES, *variants]
    k = seed % len(arms)
    return arms[k:] + arms[:k]


def run_dataset(name: str, args: argparse.Namespace, storage: Path) -> dict[str, Any]:
    settings = dataset_settings(name, args)
    reference = REFERENCES[name]
    budget = settings["population"] * settings["rounds"] * settings["epochs_per_round"]
    epochs = 1 if args.quick else RETRAIN_EPOCHS[name]
    seed_rows = []
    for seed in args.seeds:
        runs = {}
        for arm in arm_order(seed, args.variants):
            config = search_config(settings, arm, seed, storage)
            print(f"\n=== {name} seed {seed}: {arm} ===", flush=True)
            runs[arm] = run_strategy(config, budget=budget, reference=reference, retrain_epochs=epochs)
            if not args.keep:
                shutil.rmtree(config.experiment_path, ignore_errors=True)
        plain = {s: runs[s] for s in STRATEGIES}
        seed_row = {"seed": seed, "order": arm_order(seed, args.variants), "ratios": compare_seed(plain), "runs": plain}
        if args.variants:
            seed_row["variants"] = {v: runs[v] for v in args.variants}
            seed_row["variant_ratios"] = {v: compare_variant(runs[v], runs["spidernet"]) for v in args.variants}
        seed_rows.append(seed_row)
        print(json.dumps({"dataset": name, "seed": seed, "ratios": seed_row["ratios"],
                          "variant_ratios": seed_row.get("variant_ratios")}, default=str), flush=True)
    block = summarise_dataset(seed_rows)
    for variant in block.get("variants", {}):
        block["variants"][variant]["config"] = VARIANTS[variant]
    block["settings"] = {**settings, "budget_trial_epochs": budget, "retrain_epochs": epochs}
    block["reference"] = reference
    return block


# -- reporting ------------------------------------------------------------------------------------------
COLORS = {"spidernet": "tab:blue", "random": "tab:orange", "pbt": "tab:green"}


def plot_fronts(name: str, block: dict[str, Any], fronts: dict[str, list[list[dict]]], path: Path) -> Path:
    """Val error against latency and against peak memory: every counted row faint, each run's front a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True, constrained_layout=True)
    for axis, (front, metric) in zip(axes, FRONTS.items()):
        for strategy in STRATEGIES:
            for index, rows in enumerate(fronts[strategy]):
                points = np.array([(r[metric], 1 - r["val_accuracy"]) for r in _valid(rows) if _finite(r.get(metric))])
                if not len(points):
                    continue
                axis.scatter(points[:, 0], points[:, 1], s=10, color=COLORS[strategy], alpha=0.25, linewidths=0)
                first = points[nondominated_sort(points)[0]]
                first = first[np.argsort(first[:, 0])]
                axis.step(first[:, 0], first[:, 1], where="post", color=COLORS[strategy], alpha=0.8, marker="o",
                          markersize=4, label=strategy if index == 0 else None)
        axis.axvline(block["reference"][metric], color="0.4", linestyle=":", linewidth=1,
                     label=f"reference {block['reference'][metric]:g}")
        axis.set_xlabel({"latency": "inference latency, batch 1 (ms)", "memory": "peak training memory (MB)"}[front])
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=9)
    axes[0].set_ylabel("validation error")
    figure.suptitle(f"{name}: fronts of every seed (rows within the equal budget)")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _fmt(stats: dict[str, Any], spec: str = ".2f", scale: float = 1.0) -> str:
    if not stats.get("n"):
        return "n/a"
    text = f"{stats['mean'] * scale:{spec}}"
    if stats["of"] > 1:
        text += f" [{stats['min'] * scale:{spec}}, {stats['max'] * scale:{spec}}]"
    if stats["n"] < stats["of"]:
        text += f" ({stats['n']} of {stats['of']} seeds)"
    return text


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# SpiderNet vs random search vs stock PBT, at equal compute",
        "",
        f"{s['date']}, {s['os_cpus']}-core CPU machine shared with other jobs (load average {s['load_average_start']:.1f} "
        f"at the start, {s['load_average_end']:.1f} at the end), local Ray with {s['cpus']} CPUs for every run, "
        f"Ray {s['ray']}, torch {s['torch']}, code {s['code']}. Total wall time {s['total_minutes']:.1f} min.",
        "",
        "Each run is cut at the same budget of trial-epochs (population x rounds x epochs per round), in the order "
        "its rows arrived. Values are the mean over seeds with [min, max]. Hypervolumes are in val error x ms and "
        "val error x MB against the fixed reference point. The best model is the row with the best validation "
        "accuracy. Its test accuracy comes from retraining it from scratch under one recipe (`spidernet_ray.retrain`). "
        "Time to target is the wall time from the run's start until the best validation accuracy so far first "
        "reached random search's final best on the same seed.",
        "",
    ]
    for name, block in report["datasets"].items():
        st, ref = block["settings"], block["reference"]
        lines += [
            f"## {name}",
            "",
            f"Population {st['population']}, {st['rounds']} rounds x {st['epochs_per_round']} epoch(s), "
            f"C={st['channels']}, {st['reductions']} reductions, batch {st['batch_size']}"
            + (f", {st['subset']} training examples" if st.get("subset") else "")
            + f"; budget {st['budget_trial_epochs']} trial-epochs per run; seeds {block['seeds']}; "
            f"retrain {st['retrain_epochs']} epochs. Reference point: val error {ref['val_error']:g}, "
            f"{ref['latency_ms']:g} ms, {ref['peak_memory_mb']:g} MB.",
            "",
            "| | SpiderNet | random search | stock PBT |",
            "|---|---:|---:|---:|",
        ]
        per = block["strategies"]
        rows = [
            ("hypervolume (val error, latency)", "hypervolume_latency", ".2f", 1.0),
            ("hypervolume (val error, memory)", "hypervolume_memory", ".2f", 1.0),
            ("best val accuracy (%)", "best_val_accuracy", ".2f", 100.0),
            ("best model: params", "best_params", ",.0f", 1.0),
            ("best model: latency (ms)", "best_latency_ms", ".2f", 1.0),
            ("best model: peak memory (MB)", "best_peak_memory_mb", ".1f", 1.0),
            ("best model retrained: test accuracy (%)", "test_accuracy", ".2f", 100.0),
            ("wall time (s)", "wall_seconds", ".0f", 1.0),
            ("time to random's final best (s)", "time_to_target_s", ".0f", 1.0),
        ]
        for label, key, spec, scale in rows:
            lines.append(f"| {label} | " + " | ".join(_fmt(per[x][key], spec, scale) for x in STRATEGIES) + " |")
        lines.append("| trial-epochs counted (reported) per seed | " + " | ".join(
            ", ".join(f"{c} ({r})" for c, r in zip(per[x]["trial_epochs_counted"], per[x]["trial_epochs_reported"]))
            for x in STRATEGIES) + " |")
        lines += [
            "",
            "| ratio, SpiderNet / baseline | per seed | mean [min, max] | target |",
            "|---|---|---:|---|",
        ]

        def ratio_line(label, stats, target):
            per_seed = ", ".join("never" if v is None else f"{v:.2f}" for v in stats["per_seed"])
            return f"| {label} | {per_seed} | {_fmt(stats)} | {target} |"

        lines += [
            ratio_line("hypervolume (latency) vs random", block["hypervolume_ratio_vs_random"]["latency"], ">= 1.2"),
            ratio_line("hypervolume (memory) vs random", block["hypervolume_ratio_vs_random"]["memory"], ">= 1.2"),
            ratio_line("hypervolume (latency) vs stock PBT", block["hypervolume_ratio_vs_pbt"]["latency"], ""),
            ratio_line("hypervolume (memory) vs stock PBT", block["hypervolume_ratio_vs_pbt"]["memory"], ""),
            ratio_line("best model params vs random", block["params_ratio_vs_random"], "<= 0.7"),
            ratio_line("best model peak memory vs random", block["memory_ratio_vs_random"], "<= 0.7"),
            ratio_line("best model latency vs random", block["latency_ratio_vs_random"], ""),
            ratio_line("time to target vs random", block["time_to_target_ratio_vs_random"], "<= 0.5"),
            ratio_line("best val accuracy minus random's (points)", _scaled(block["val_accuracy_difference_vs_random"]),
                       ">= 0"),
            ratio_line("retrained test accuracy minus random's (points)",
                       _scaled(block["test_accuracy_difference_vs_random"]), ""),
            "",
            f"![{name} fronts](compare_{name}.png)",
            "",
            "Splits carried at the end by each member (per seed): " + "; ".join(
                f"{x}: " + " / ".join(str(r["runs"][x]["splits_at_end"]) for r in block["per_seed"])
                for x in ("spidernet", "random")) + ".",
            "",
        ]
        if block.get("variants"):  # absent in compare.json files written before the variants
            lines += variant_table(name, block["variants"])
    commands = report["settings"]["command"]
    lines += ["## Reading", "", report.get("reading", "(see the report of the run)"), "", "Produced by:", "", "```",
              *([commands] if isinstance(commands, str) else commands), "```", ""]
    return "\n".join(lines)


def variant_table(name: str, variants: Mapping[str, Any]) -> list[str]:
    """One line per variant: its figures over plain SpiderNet of the same seed, and what its extension did."""
    lines = [
        f"### {name}: extensions vs plain SpiderNet at equal compute",
        "",
        "Each variant is SpiderNet with one extension on, cut at the same trial-epoch budget; ratios are "
        "variant / plain SpiderNet of the same seed (accuracy differences in points), mean [min, max] over seeds. "
        "The last column sums over the seeds' counted rows: non-split mutations carried out / drawn, ops deleted, "
        "channels removed, snapshots taken, rounds that trained longer than the others.",
        "",
        "| variant | hypervolume (latency) | hypervolume (memory) | best val acc (points) | best model params "
        "| best model memory | best model latency | retrained test acc (points) | wall time "
        "| trial-epochs counted | what the extension did |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for variant, v in variants.items():
        cells = [_fmt(v["hypervolume_ratio"]["latency"]), _fmt(v["hypervolume_ratio"]["memory"]),
                 _fmt(_scaled(v["val_accuracy_difference"])), _fmt(v["params_ratio"]), _fmt(v["memory_ratio"]),
                 _fmt(v["latency_ratio"]), _fmt(_scaled(v["test_accuracy_difference"])), _fmt(v["wall_time_ratio"]),
                 ", ".join(map(str, v["trial_epochs_counted"])), activity_text(v["activity"])]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines + [""]


def activity_text(activities: Sequence[Mapping[str, Any] | None]) -> str:
    """The seeds' ``extension_activity`` summed, in a few words."""
    mutations: dict[str, list[int]] = {}
    totals = {"ops_deleted": 0, "channels_removed": 0, "snapshots": 0, "longer_rounds": 0}
    for activity in filter(None, activities):
        for kind, counts in activity["mutations"].items():
            seen = mutations.setdefault(kind, [0, 0])
            seen[0] += counts["done"]
            seen[1] += counts["asked"]
        for key in totals:
            totals[key] += activity.get(key, 0)
    words = [f"{kind} {done}/{asked}" for kind, (done, asked) in sorted(mutations.items()) if kind != "split"]
    words.append(f"{totals['ops_deleted']} ops deleted")
    words += [f"{n} {key.replace('_', ' ')}" for key, n in totals.items() if key != "ops_deleted" and n]
    return ", ".join(words)


def _scaled(stats: dict[str, Any]) -> dict[str, Any]:
    """Accuracy differences in points (x100)."""
    out = {k: (v * 100 if isinstance(v, float) else v) for k, v in stats.items() if k != "per_seed"}
    out["per_seed"] = [None if v is None else v * 100 for v in stats["per_seed"]]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import ray
    import torch

    from spidernet_ray.tuner import start_ray

    args = parse_args(argv)
    if args.render:
        return render(args.output or RESULTS, args.reading, args.storage)
    if args.quick and args.seeds == [0, 1, 2]:
        args.seeds = [0]
    output = args.output or (Path(tempfile.mkdtemp(prefix="compare-quick-")) if args.quick else RESULTS)
    storage = args.storage or Path(tempfile.mkdtemp(prefix="compare-runs-"))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    start_ray(None, args.cpus, 0, 0)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    report: dict[str, Any] = {"datasets": {}, "targets": TARGETS}
    if args.reading:
        report["reading"] = args.reading.read_text().strip()
    output.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        block = run_dataset(name, args, storage)
        fronts = {x: [r["runs"][x].pop("front_rows") for r in block["per_seed"]] for x in STRATEGIES}
        for seed_row in block["per_seed"]:  # the plot shows the strategies only
            for run in seed_row.get("variants", {}).values():
                run.pop("front_rows")
        plot_fronts(name, block, fronts, output / f"compare_{name}.png")
        report["datasets"][name] = block
        report["settings"] = {
            "command": "python benchmarks/compare.py " + " ".join(part for part in [
                f"--datasets {' '.join(args.datasets)}", f"--seeds {' '.join(map(str, args.seeds))}",
                f"--variants {' '.join(args.variants)}".strip(), "--quick" * args.quick, f"--cpus {args.cpus}",
            ] if part),
            "cpus": args.cpus, "os_cpus": os.cpu_count(), "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0], "total_minutes": (time.perf_counter() - started) / 60,
            "ray": ray.__version__, "torch": torch.__version__, "machine": platform.machine(), "code": code_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        # Written after every dataset, so a run cut short keeps what it finished.
        (output / "compare.json").write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
        (output / "compare.md").write_text(markdown(report))
    print(markdown(report))
    print(f"written: {output}")
    if not args.keep and args.storage is None:
        shutil.rmtree(storage, ignore_errors=True)
    return report


def render(output: Path, reading: Path | None, storage: Path | None = None) -> dict[str, Any]:
    """Rewrite compare.md from compare.json (with a new reading, which is stored in compare.json too), and
    the plots too when ``storage`` holds the runs (kept with --keep)."""
    path = output / "compare.json"
    report = json.loads(path.read_text())
    if reading is not None:
        report["reading"] = reading.read_text().strip()
        path.write_text(json.dumps(report, indent=1) + "\n")
    for name, block in report["datasets"].items() if storage is not None else ():
        st = block["settings"]
        fronts = {x: [scored_rows(arrival_rows(storage / run_name(st["dataset"], x, seed)),
                                  st["budget_trial_epochs"], st["epochs_per_round"]) for seed in block["seeds"]]
                  for x in STRATEGIES}
        plot_fronts(name, block, fronts, output / f"compare_{name}.png")
    (output / "compare.md").write_text(markdown(report))
    return report


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    main()
