"""How well do the train-free proxies rank edge splits, and what do they cost?

For each dataset: grow a base network by a few random splits (so it has many edges), draw candidate
splits of it, score every candidate with the proxies exactly as ``choose_split`` does, then train
every child (and the base) briefly from the same seed with the same recipe and compare the proxy
ranking with validation accuracy by Kendall tau. ``proxy_cost_fraction`` is the proxy time per
candidate (scoring the parent and all candidates, divided by the number of candidates) over the time
of one training round (``epochs`` epochs, what a trainable does between two reports). Times are CPU
seconds of this process on one thread (equal to wall time on an idle machine, and unaffected by
other work sharing it).

    python benchmarks/proxy_quality.py                         # digits + Fashion-MNIST subset
    python benchmarks/proxy_quality.py --datasets digits --quick

Writes benchmarks/results/proxy_quality.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from spidernet_ray.data import load_dataset, make_loaders
from spidernet_ray.genome import Genome, initial_genome
from spidernet_ray.proxies import rank_candidates, score_splits
from spidernet_ray.supernet import SuperNet
from spidernet_ray.train import evaluate, make_optimizer, train_epoch

RESULTS = Path(__file__).resolve().parent / "results"
FASHION_ROOT = Path("/work/shared/data/fashion-mnist")

# Per dataset: data, base network, candidates and training recipe. Fashion-MNIST runs at 28x28, so
# it gets a smaller base network and fewer candidates to fit the time budget, and a lower learning
# rate (0.02 and up made its two-epoch accuracy collapse).
DATASETS = {
    "digits": dict(
        root=None, subset=None, val_fraction=0.2, channels=8, base_splits=5, candidates=20,
        recipe=dict(epochs=2, batch_size=32, lr=0.05, seed=0),
    ),
    "fashion_mnist": dict(
        root=FASHION_ROOT, subset=2000, val_fraction=0.2, channels=4, base_splits=1, candidates=11,
        recipe=dict(epochs=2, batch_size=32, lr=0.01, seed=0),
    ),
}

# Proxy settings: the defaults choose_split uses, the same fed real training images instead of
# noise, the earlier (until session 3) defaults, and the heavier setting DESIGN.md describes (~200 NTK
# samples, ~1000 LRC inputs).
PROXY_VARIANTS = {
    "default": dict(),
    "default_real_inputs": dict(real_inputs=True),
    "earlier_default": dict(ntk_samples=64, lrc_side=24, n_inits=2),
    "design_sized": dict(ntk_samples=200, lrc_side=32, n_inits=3),
}


def grow(genome: Genome, splits: int, rng: random.Random) -> Genome:
    for _ in range(splits):
        cell = rng.randrange(len(genome.cells))
        genome = genome.split_edge(cell, *rng.choice(genome.candidate_splits(cell)))
    return genome


def draw_candidates(genome: Genome, count: int, rng: random.Random) -> list[tuple[int, int, int]]:
    every = [(cell, src, dst) for cell in range(len(genome.cells)) for src, dst in genome.candidate_splits(cell)]
    return sorted(rng.sample(every, min(count, len(every))))


def train_briefly(genome: Genome, splits, recipe: dict) -> tuple[float, float]:
    """(validation accuracy, training CPU seconds) after ``epochs`` epochs from a fixed seed."""
    torch.manual_seed(recipe["seed"])
    model = SuperNet(genome)
    optimizer = make_optimizer(model, lr=recipe["lr"])
    loaders = make_loaders(splits, recipe["batch_size"], seed=recipe["seed"])  # same batch order each time
    started = time.process_time()
    for _ in range(recipe["epochs"]):
        train_epoch(model, optimizer, loaders.train)
    seconds = time.process_time() - started
    accuracy, _ = evaluate(model, loaders.val)
    return accuracy, seconds


def real_inputs(splits, count: int) -> torch.Tensor:
    loaders = make_loaders(splits, count, seed=0, augment=False)
    images, _ = next(iter(loaders.train))
    return images


def proxy_table(base: Genome, candidates, splits, variant: dict) -> dict:
    """Proxy deltas of every candidate, a combined score over all of them, and the time taken."""
    settings = {k: v for k, v in variant.items() if k != "real_inputs"}
    inputs = real_inputs(splits, 256) if variant.get("real_inputs") else None
    started = time.process_time()
    parent, children = score_splits(base, candidates, seed=0, inputs=inputs, **settings)
    seconds = time.process_time() - started
    ranked = {(c["cell"], c["src"], c["dst"]): c for c in rank_candidates(candidates, parent, children)}
    rows = [ranked[split] for split in candidates]
    # choose_split scores valid candidates only; to rank them all, the same normalised mean over all.
    better_kappa = min_max([-r["delta_kappa"] for r in rows])
    more_regions = min_max([r["delta_lrc"] for r in rows])
    return {
        "settings": settings | {"inputs": "training images" if inputs is not None else "unit normal noise"},
        "parent": {"kappa": parent.kappa, "lrc": parent.lrc},
        "combined": [(k + r) / 2 for k, r in zip(better_kappa, more_regions)],
        "rows": rows,
        "seconds_per_candidate": seconds / len(rows),
    }


def min_max(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    return [0.5] * len(values) if high == low else [(v - low) / (high - low) for v in values]


def tau(scores, accuracies) -> float | None:
    value = kendalltau(scores, accuracies).statistic
    return None if np.isnan(value) else float(value)


def agreement(table: dict, accuracies: list[float], round_seconds: float) -> dict:
    rows = table["rows"]
    valid = [i for i, r in enumerate(rows) if r["valid"]]
    winner = max(valid, key=lambda i: rows[i]["score"], default=None)  # what choose_split would pick
    return {
        "kendall_tau": tau(table["combined"], accuracies),
        "kendall_tau_kappa_alone": tau([-r["delta_kappa"] for r in rows], accuracies),
        "kendall_tau_lrc_alone": tau([r["delta_lrc"] for r in rows], accuracies),
        "n_valid": len(valid),
        "winner_accuracy": None if winner is None else accuracies[winner],
        "winner_accuracy_rank": None if winner is None else 1 + sum(a > accuracies[winner] for a in accuracies),
        "mean_accuracy_valid": float(np.mean([accuracies[i] for i in valid])) if valid else None,
        "proxy_seconds_per_candidate": table["seconds_per_candidate"],
        "proxy_cost_fraction": table["seconds_per_candidate"] / round_seconds,
        "settings": table["settings"],
        "parent_proxies": table["parent"],
    }


def run_dataset(name: str, config: dict, variants: dict, quick: bool) -> dict:
    started = time.perf_counter()
    splits = load_dataset(name, root=config["root"], subset=config["subset"], val_fraction=config["val_fraction"])
    rng = random.Random(0)
    base = grow(initial_genome(splits.input_shape, splits.num_classes, channels=config["channels"]),
                config["base_splits"], rng)
    candidates = draw_candidates(base, 4 if quick else config["candidates"], rng)
    recipe = config["recipe"] | ({"epochs": 1} if quick else {})
    tables = {label: proxy_table(base, candidates, splits, variant) for label, variant in variants.items()}
    print(f"{name}: {len(candidates)} candidates scored; training them", flush=True)

    base_accuracy, _ = train_briefly(base, splits, recipe)
    accuracies, train_seconds = [], []
    for split in candidates:
        accuracy, seconds = train_briefly(base.split_edge(*split), splits, recipe)
        accuracies.append(accuracy)
        train_seconds.append(seconds)
        print(f"  split {split}: val accuracy {accuracy:.3f} ({seconds:.1f}s)", flush=True)
    round_seconds = float(np.mean(train_seconds))

    params = [sum(p.numel() for p in SuperNet(base.split_edge(*s)).parameters()) for s in candidates]
    return {
        "data": {"train": len(splits.y_train), "val": len(splits.y_val), "input_shape": list(splits.input_shape),
                 "subset": config["subset"]},
        "base": {"channels": config["channels"], "random_splits": config["base_splits"],
                 "edges": sum(len(c.edges) for c in base.cells), "val_accuracy": base_accuracy},
        "recipe": recipe | {"round": f"{recipe['epochs']} epochs of SGD on the training split"},
        "n_candidates": len(candidates),
        "round_seconds": round_seconds,
        "proxies": {label: agreement(table, accuracies, round_seconds) for label, table in tables.items()},
        "kendall_tau_params_baseline": tau(params, accuracies),
        "candidates": [
            {"split": list(split), "val_accuracy": acc, "params": n,
             **{f"{label}_{key}": tables[label]["rows"][i][key] for label in tables
                for key in ("delta_kappa", "delta_lrc", "valid")}}
            for i, (split, acc, n) in enumerate(zip(candidates, accuracies, params))
        ],
        "seconds": time.perf_counter() - started,
    }


def signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Proxy quality: do train-free proxies rank edge splits like brief training does?",
        "",
        "Kendall tau between proxy scores and validation accuracy after one training round (same "
        "seed and recipe for every child; recipes below). Combined = mean of min-max normalised "
        "-delta_kappa and delta_LRC over all candidates; valid = delta_kappa <= 0 and delta_LRC > 0; "
        "winner = the valid candidate choose_split would pick. Cost fraction = proxy CPU seconds per "
        f"candidate / CPU seconds of one training round. Machine: {report['machine']}.",
        "",
        "| dataset | proxies | n | tau combined | tau kappa | tau LRC | valid | winner acc (rank) | cost fraction |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in report["datasets"].items():
        for label, p in data["proxies"].items():
            winner = "none"
            if p["winner_accuracy"] is not None:
                winner = f"{p['winner_accuracy']:.3f} ({p['winner_accuracy_rank']})"
            lines.append(
                f"| {name} | {label} | {data['n_candidates']} | {signed(p['kendall_tau'])} | "
                f"{signed(p['kendall_tau_kappa_alone'])} | {signed(p['kendall_tau_lrc_alone'])} | {p['n_valid']} | "
                f"{winner} | {p['proxy_cost_fraction']:.3f} |"
            )
    lines += ["", "Per dataset (tau of the child's parameter count as a naive reference, accuracy spread):", ""]
    for name, data in report["datasets"].items():
        accs = [c["val_accuracy"] for c in data["candidates"]]
        lines.append(
            f"- {name}: tau(params) {signed(data['kendall_tau_params_baseline'])}; child accuracy "
            f"{min(accs):.3f}..{max(accs):.3f} (base {data['base']['val_accuracy']:.3f}); one round = "
            f"{data['recipe']['round']} (batch {data['recipe']['batch_size']}, lr {data['recipe']['lr']}), "
            f"{data['round_seconds']:.1f} CPU s; {data['data']['train']} train / {data['data']['val']} val images; "
            f"base network {data['base']['edges']} edges at {data['base']['channels']} channels."
        )
    lines += ["", report["note"], ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--fashion-root", type=Path, default=FASHION_ROOT)
    parser.add_argument("--quick", action="store_true", help="4 candidates, 1 epoch, default proxies only (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per trial, as Ray gives a 1-CPU trial; steadier timings
    DATASETS["fashion_mnist"]["root"] = args.fashion_root

    started = time.perf_counter()
    datasets = {}
    for name in args.datasets:
        # Only digits gets every proxy variant; Fashion-MNIST's time goes to training.
        variants = PROXY_VARIANTS if name == "digits" and not args.quick else {"default": PROXY_VARIANTS["default"]}
        datasets[name] = run_dataset(name, DATASETS[name], variants, args.quick)
    headline = datasets.get("digits", next(iter(datasets.values())))["proxies"]["default"]
    report = {
        "kendall_tau": headline["kendall_tau"],
        "n_candidates": datasets.get("digits", next(iter(datasets.values())))["n_candidates"],
        "proxy_cost_fraction": headline["proxy_cost_fraction"],
        "headline": "digits, default proxy settings (choose_split's), combined score",
        "datasets": datasets,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread",
        "note": (
            "Small candidate sets and brief training make these taus noisy: with 20 candidates a tau "
            "of about +-0.3 is within chance (p ~ 0.05 needs |tau| > ~0.32)."
        ),
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "proxy_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.out / "proxy_quality.md")
    print(json.dumps({k: report[k] for k in ("kendall_tau", "n_candidates", "proxy_cost_fraction", "seconds")}))


if __name__ == "__main__":
    main()
