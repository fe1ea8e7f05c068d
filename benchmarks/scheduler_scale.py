"""Time per scheduling decision of SpiderNetScheduler with a simulated population (no training).

A decision is what the scheduler does on the driver for each reported result once a member is due
for perturbation: ``_save_trial_state`` (scores, the Pareto archive, the state file written to disk)
and ``_quantiles`` (Pareto ranking of the whole population: constraint-dominated non-dominated sorting
and crowding distance). Real ``ray.tune.experiment.Trial`` objects (stubs, never started) report
random objectives round after round, each result carrying a genome JSON of realistic size and a fresh
architecture hash, so the archive grows as it would. The exploit itself (pausing a trial, cloning a
checkpoint) is the controller's work and is timed by ``overhead.py``, not here.
Writes results/scheduler_scale.json (key ``ms_per_decision``) and .md.

    python benchmarks/scheduler_scale.py [--population 256] [--rounds 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import ray
from ray.tune.experiment import Trial

from spidernet_ray.genome import initial_genome
from spidernet_ray.scheduler import SpiderNetScheduler
from provenance import code_version  # benchmarks/provenance.py, beside this script

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 10.0
OBJECTIVES = ("max:val_accuracy", "min:latency_ms", "min:peak_memory_mb")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--population", type=int, default=256)
    p.add_argument("--rounds", type=int, default=8, help="results per member")
    p.add_argument("--budget-fraction", type=float, default=0.1,
                   help="share of results over a latency budget (exercises constraint domination)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=RESULTS)
    return p.parse_args(argv)


def simulated_result(rng: random.Random, trial_id: str, round_: int, genome_json: str, over_budget: bool) -> dict:
    """A result as SpiderNetTrainable reports it, with random objectives."""
    latency = rng.lognormvariate(1.0, 0.4)
    return {
        "training_iteration": round_,
        "trial_id": trial_id,
        "val_accuracy": rng.random(),
        "latency_ms": latency * (3.0 if over_budget else 1.0),
        "peak_memory_mb": rng.lognormvariate(3.0, 0.5),
        "params": rng.randrange(5_000, 200_000),
        "flops": rng.randrange(10**5, 10**7),
        "ops_alive": rng.randrange(3, 40),
        "genome": genome_json,
        "genome_hash": f"{rng.getrandbits(64):016x}",
        "diverged": rng.random() < 0.01,
    }


def run(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    genome_json = initial_genome((1, 28, 28), 10, 2, 8).split_edge(0, 0, 2).split_edge(1, 1, 3).to_json()
    with tempfile.TemporaryDirectory() as directory:
        scheduler = SpiderNetScheduler(
            objectives=OBJECTIVES, budgets={"latency_ms": 8.0},
            state_path=Path(directory) / "scheduler_state.json",
            hyperparam_mutations={"lr": [0.01, 0.1]},
        )
        controller = SimpleNamespace(search_alg=None)
        trials = [Trial("simulated", stub=True, trial_id=f"sim_{i:05d}", config={"lr": 0.05})
                  for i in range(args.population)]
        for trial in trials:
            scheduler.on_trial_add(controller, trial)
        save_ms, rank_ms, total_ms = [], [], []
        for round_ in range(1, args.rounds + 1):
            for trial in rng.sample(trials, len(trials)):  # members report in no fixed order
                result = simulated_result(rng, trial.trial_id, round_, genome_json,
                                          rng.random() < args.budget_fraction)
                state = scheduler._trial_state[trial]
                start = time.perf_counter()
                scheduler._save_trial_state(state, round_, result, trial)
                middle = time.perf_counter()
                lower, upper = scheduler._quantiles()
                end = time.perf_counter()
                if round_ > 1:  # the first round fills the population; decisions start once all have reported
                    save_ms.append((middle - start) * 1e3)
                    rank_ms.append((end - middle) * 1e3)
                    total_ms.append((end - start) * 1e3)
        state_bytes = scheduler.state_path.stat().st_size
        archive_size = len(scheduler.archive)
        quantile_sizes = (len(lower), len(upper))

    def pct(values, q):
        return statistics.quantiles(values, n=100)[q - 1]

    return {
        "ms_per_decision": statistics.median(total_ms),
        "ms_per_decision_mean": statistics.fmean(total_ms),
        "ms_per_decision_p95": pct(total_ms, 95),
        "ms_save_trial_state_median": statistics.median(save_ms),
        "ms_quantiles_median": statistics.median(rank_ms),
        "target_ms": TARGET_MS,
        "meets_target": statistics.median(total_ms) <= TARGET_MS,
        "decisions_timed": len(total_ms),
        "population": args.population,
        "rounds": args.rounds,
        "archive_size_at_end": archive_size,
        "state_file_bytes_at_end": state_bytes,
        "quantile_sizes": list(quantile_sizes),
        "settings": {
            "objectives": list(OBJECTIVES), "latency_budget_ms": 8.0, "budget_fraction": args.budget_fraction,
            "seed": args.seed, "ray": ray.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "os_cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
            "code": code_version(("spidernet_ray/scheduler.py", "spidernet_ray/pareto.py")),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def markdown(report: dict) -> str:
    s = report["settings"]
    return "\n".join([
        "# Scheduler scalability: time per scheduling decision",
        "",
        f"SpiderNetScheduler with a simulated population of {report['population']} (real `Trial` stubs, no "
        f"training), {report['rounds']} results per member with random objectives ({', '.join(s['objectives'])}; "
        f"{s['budget_fraction']:.0%} of results over a latency budget, 1% diverged). A decision = "
        "`_save_trial_state` (scores, Pareto archive, state file written) + `_quantiles` (Pareto ranking of the "
        f"population). Timed over {report['decisions_timed']} results after the first round. Ray {s['ray']}, "
        f"Python {s['python']}, {s['os_cpus']}-core shared machine (load average {s['load_average']:.1f}), {s['date']}, "
        f"code {s['code']}.",
        "",
        "| | ms |",
        "|---|---:|",
        f"| **per decision, median** (target <= {report['target_ms']:g} ms) | **{report['ms_per_decision']:.2f}** |",
        f"| per decision, mean / p95 | {report['ms_per_decision_mean']:.2f} / {report['ms_per_decision_p95']:.2f} |",
        f"| `_save_trial_state`, median | {report['ms_save_trial_state_median']:.2f} |",
        f"| `_quantiles` (ranking), median | {report['ms_quantiles_median']:.2f} |",
        "",
        f"At the end: {report['archive_size_at_end']} architectures in the Pareto archive, state file "
        f"{report['state_file_bytes_at_end'] / 1024:.0f} KiB, quantiles of {report['quantile_sizes'][0]} / "
        f"{report['quantile_sizes'][1]} members.",
        "",
        "Produced by:",
        "",
        "```",
        f"python benchmarks/scheduler_scale.py --population {report['population']} --rounds {report['rounds']} "
        f"--seed {s['seed']}",
        "```",
        "",
    ])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    report = run(args)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "scheduler_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "scheduler_scale.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
