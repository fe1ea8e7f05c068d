"""Does selection alone add value? The SpiderNet scheduler against random sampling on a synthetic
landscape with a known optimum, at an equal number of evaluations.

A toy member's genome is a few integer choices; its true accuracy is a smooth, saturating function
of them and its latency a sum of per-choice costs, so the true Pareto front and the best accuracy
under a latency budget are found by enumeration. A round trains nothing: it reports the true
accuracy plus noise. The population runs under the product's scheduler class on a real local Ray
Tune; a clone restores its donor's genome from the checkpoint and applies the MutationInstruction it
receives (one choice moved up or down). Random sampling draws genomes from the same space, one noisy
evaluation each, as many as the population reported rounds.

Per seed, for each arm, on the true values of what it evaluated:
- regret: best accuracy under the latency budget minus the true accuracy of the arm's pick (the
  feasible genome it observed best);
- hypervolume of the evaluated genomes (accuracy, latency normalised to [0, 1]), as a share of the
  true front's.

    python benchmarks/selection_landscape.py --seeds 0-19      # writes results/selection_landscape.*
    python benchmarks/selection_landscape.py --seeds 100-103 --no-write
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from compare_stats import bootstrap_ci, wilcoxon_signed_rank  # benchmarks/compare_stats.py, beside this script
from spidernet_ray.pareto import hypervolume_2d
from spidernet_ray.record import MutationInstruction

RESULTS = Path(__file__).resolve().parent / "results"


class Landscape:
    """``positions`` choices of ``levels`` values each. Each (position, level) has a quality and a
    cost; costs grow with level and qualities mostly do, with diminishing returns, so accuracy and
    latency trade off. Fixed by ``seed``, shared by every run."""

    def __init__(self, positions: int = 6, levels: int = 5, noise: float = 0.02, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.positions, self.levels, self.noise = positions, levels, noise
        weight = rng.uniform(0.3, 1.0, positions)
        bumps = rng.normal(0.0, 0.15, (positions, levels))  # not every bigger choice is better
        self.quality = weight[:, None] * (np.sqrt(np.arange(levels) / (levels - 1)) + bumps)
        self.cost = rng.uniform(0.5, 1.5, positions)[:, None] * (1 + np.arange(levels)) ** 1.3
        self.all = np.array(list(itertools.product(range(levels), repeat=positions)))
        self.all_accuracy, self.all_latency = self.true(self.all)
        self.latency_max = float(self.all_latency.max())
        self.budget = float(np.median(self.all_latency))
        self.best_under_budget = float(self.all_accuracy[self.all_latency <= self.budget].max())
        self.front_hypervolume = self.hypervolume(self.all_accuracy, self.all_latency)

    def true(self, genomes) -> tuple[np.ndarray, np.ndarray]:
        genomes = np.atleast_2d(genomes)
        index = np.arange(self.positions)
        quality = self.quality[index, genomes].sum(axis=1)
        accuracy = 1 / (1 + np.exp(-(quality - self.quality.mean() * self.positions)))
        return accuracy, self.cost[index, genomes].sum(axis=1)

    def observe(self, genome, rng: random.Random) -> tuple[float, float]:
        accuracy, latency = self.true(genome)
        return float(accuracy[0]) + rng.gauss(0.0, self.noise), float(latency[0])

    def random_genome(self, rng: random.Random) -> list[int]:
        return [rng.randrange(self.levels) for _ in range(self.positions)]

    def mutate(self, genome: list[int], rng: random.Random) -> list[int]:
        child = list(genome)
        position = rng.randrange(self.positions)
        child[position] = min(self.levels - 1, max(0, child[position] + rng.choice((-1, 1))))
        return child

    def hypervolume(self, accuracy, latency) -> float:
        points = np.column_stack([-np.asarray(accuracy), np.asarray(latency) / self.latency_max])
        return hypervolume_2d(points, [0.0, 1.0 + 1e-9])

    def score(self, evaluated: list[tuple[list[int], float, float]]) -> dict:
        """Regret and hypervolume share of an arm's evaluations (genome, observed accuracy, latency)."""
        genomes = np.array([g for g, _, _ in evaluated])
        accuracy, latency = self.true(genomes)
        observed = np.array([a for _, a, _ in evaluated])
        feasible = latency <= self.budget
        pick = np.flatnonzero(feasible)[np.argmax(observed[feasible])] if feasible.any() else None
        regret = self.best_under_budget - (accuracy[pick] if pick is not None else 0.0)
        return {"regret": float(regret), "hypervolume": self.hypervolume(accuracy, latency) / self.front_hypervolume}


def random_arm(landscape: Landscape, evaluations: int, seed: int) -> dict:
    rng = random.Random(seed)
    evaluated = []
    for _ in range(evaluations):
        genome = landscape.random_genome(rng)
        evaluated.append((genome, *landscape.observe(genome, rng)))
    return landscape.score(evaluated)


def make_trainable(landscape: Landscape):
    from ray import tune

    class ToyMember(tune.Trainable):
        """A member of the toy population: its genome is its checkpoint; a clone applies its mutation
        instruction once, after restoring its donor's genome."""

        def setup(self, config):
            self.rng = random.Random(config["seed"])
            self.genome = landscape.random_genome(self.rng)
            self.applied = None

        def reset_config(self, new_config):
            self.config = new_config
            return True

        def step(self):
            mutation = self.config.get("mutation")
            if mutation and mutation["id"] != self.applied:
                instruction = MutationInstruction.from_dict(mutation)
                self.genome = landscape.mutate(self.genome, random.Random(instruction.id))
                self.applied = instruction.id
            accuracy, latency = landscape.observe(self.genome, self.rng)
            return {"val_accuracy": accuracy, "latency_ms": latency, "genome": json.dumps(self.genome),
                    "genome_hash": "-".join(map(str, self.genome)), "diverged": False}

        def save_checkpoint(self, checkpoint_dir):
            state = {"genome": self.genome, "applied": self.applied}
            Path(checkpoint_dir, "member.json").write_text(json.dumps(state))

        def load_checkpoint(self, checkpoint_dir):
            state = json.loads(Path(checkpoint_dir, "member.json").read_text())
            self.genome, self.applied = state["genome"], state["applied"]

    return ToyMember


def spidernet_arm(landscape: Landscape, population: int, rounds: int, seed: int, quantile_fraction: float,
                  storage: Path, budget: bool = False) -> tuple[dict, int, int]:
    """One search on a real Tune: its score, how many exploits it made and how many rounds were
    reported. ``budget``: the scheduler knows the latency budget (a constraint, as ``--latency-budget-ms``)."""
    from ray import tune

    from spidernet_ray.scheduler import SpiderNetScheduler

    scheduler = SpiderNetScheduler(
        objectives=("max:val_accuracy", "min:latency_ms"), quantile_fraction=quantile_fraction,
        hyperparam_mutations={"lr": tune.loguniform(0.08, 0.125)},  # inert here; PBT needs one
        state_path=storage / f"state-{seed}.json", seed=seed, log_config=False,
        budgets={"latency_ms": landscape.budget} if budget else None)
    rng = random.Random(seed)
    evaluated = []

    class Record(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            evaluated.append((json.loads(result["genome"]), result["val_accuracy"], result["latency_ms"]))

    tuner = tune.Tuner(
        make_trainable(landscape),
        param_space={"seed": tune.sample_from(lambda _: rng.randrange(2**31)), "lr": 0.1, "mutation": None},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=population, reuse_actors=True),
        run_config=tune.RunConfig(name=f"seed{seed}", storage_path=str(storage), verbose=0,
                                  stop={"training_iteration": rounds}, callbacks=[Record()],
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=2)),
    )
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"seed {seed}: {results.errors[0]}")
    genealogy = json.loads((storage / f"state-{seed}.json").read_text())["genealogy"]
    return landscape.score(evaluated), len(genealogy), len(evaluated)


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for metric in ("regret", "hypervolume"):
        spider = np.array([r["spidernet"][metric] for r in rows])
        rand = np.array([r["random"][metric] for r in rows])
        difference = spider - rand
        summary[metric] = {
            "spidernet_mean": float(spider.mean()), "random_mean": float(rand.mean()),
            "difference_mean": float(difference.mean()), "difference_ci95": bootstrap_ci(difference),
            "wilcoxon_p": wilcoxon_signed_rank(difference),
        }
        if metric == "hypervolume":
            ratio = spider / rand
            summary[metric].update(ratio_mean=float(ratio.mean()), ratio_ci95=bootstrap_ci(ratio))
    summary["exploits_mean"] = float(np.mean([r["exploits"] for r in rows]))
    return summary


def markdown(meta: dict, summary: dict, rows: list[dict]) -> str:
    lines = [
        "# Selection alone: SpiderNet scheduler vs random sampling on a synthetic landscape",
        "",
        f"Written by `benchmarks/selection_landscape.py` ({meta['seconds']:.0f} s). Landscape: "
        f"{meta['positions']} choices of {meta['levels']} levels, noise sd {meta['noise']}; population "
        f"{meta['population']}, {meta['rounds']} rounds, quantile {meta['quantile_fraction']}; random sampling "
        "at as many evaluations as the search reported per seed (a clone resumes at its donor's round, so a "
        f"search reports more than population x rounds); seeds {meta['seeds'][0]}..{meta['seeds'][-1]} "
        f"({len(meta['seeds'])} paired); the scheduler {'knows' if meta['scheduler_knows_budget'] else 'does not know'} "
        "the latency budget. Regret: best true accuracy under the latency budget (median latency of "
        "the space) minus the true accuracy of the arm's pick (lower is better). Hypervolume: share of the true "
        "front's (higher is better).",
        "",
        "| metric | SpiderNet | random | difference (mean, 95 % bootstrap CI) | Wilcoxon p |",
        "|---|---|---|---|---|",
    ]
    for metric in ("regret", "hypervolume"):
        s = summary[metric]
        low, high = s["difference_ci95"]
        lines.append(f"| {metric} | {s['spidernet_mean']:.4f} | {s['random_mean']:.4f} | "
                     f"{s['difference_mean']:+.4f} [{low:+.4f}, {high:+.4f}] | {s['wilcoxon_p']:.3g} |")
    s = summary["hypervolume"]
    lines += ["", f"Hypervolume ratio SpiderNet / random: {s['ratio_mean']:.3f} "
              f"[{s['ratio_ci95'][0]:.3f}, {s['ratio_ci95'][1]:.3f}]. Exploits per search: "
              f"{summary['exploits_mean']:.1f} on average.", "",
              "A regret equal to the best accuracy under the budget means the arm evaluated no genome within it.",
              "", "| seed | regret SpiderNet | regret random | HV SpiderNet | HV random | exploits | evaluations |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['spidernet']['regret']:.4f} | {r['random']['regret']:.4f} | "
                     f"{r['spidernet']['hypervolume']:.4f} | {r['random']['hypervolume']:.4f} | {r['exploits']} | "
                     f"{r['evaluations']} |")
    return "\n".join(lines) + "\n"


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100-103", help="e.g. 0-19 or 1,2,3")
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quantile-fraction", type=float, default=0.25)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--budget", action="store_true", help="the scheduler knows the latency budget")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; do not write results/")
    args = parser.parse_args(argv)

    import ray

    landscape = Landscape(noise=args.noise)
    seeds = parse_seeds(args.seeds)
    started = time.time()
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for seed in seeds:
            spider, exploits, evaluations = spidernet_arm(landscape, args.population, args.rounds, seed,
                                                          args.quantile_fraction, Path(storage), args.budget)
            rows.append({"seed": seed, "spidernet": spider, "random": random_arm(landscape, evaluations, seed),
                         "exploits": exploits, "evaluations": evaluations})
            print(json.dumps(rows[-1]), flush=True)
    ray.shutdown()
    meta = {"seeds": seeds, "population": args.population, "rounds": args.rounds, "noise": args.noise,
            "quantile_fraction": args.quantile_fraction, "positions": landscape.positions,
            "levels": landscape.levels, "budget": landscape.budget, "scheduler_knows_budget": args.budget, "seconds": time.time() - started}
    summary = summarise(rows)
    text = markdown(meta, summary, rows)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "selection_landscape.md").write_text(text)
        (RESULTS / "selection_landscape.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows},
                                                                    indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
