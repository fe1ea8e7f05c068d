"""Deleted operations must cost nothing: a pruned supernet against its to_discrete() network.

A supernet is trained with pruning active (gate pressure on) until a good share of its operations
has been deleted; then, side by side in one run, its train-step time (interleaved, median of many
steps) and its peak training memory are measured against the plain network ``to_discrete()`` gives.

Deadheading deletes an op only after a full window of mostly-closed epochs, so a pruned supernet
also holds ops that are closed but not yet deleted; those still compute (their gates need the
gradient to reopen). The keys step_time_ratio and memory_ratio compare the supernet with those
ops deleted too (only deleted ops must cost nothing); the supernet as trained is reported beside it.
Written to benchmarks/results/pruning_overhead.json and .md.

    python benchmarks/pruning_overhead.py [--dataset digits|fashion_mnist] [--steps 60]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from spidernet_ray.data import load_dataset, make_loaders
from spidernet_ray.gates import PressureCoefficient
from spidernet_ray.genome import initial_genome
from spidernet_ray.hardware import measure_peak_memory
from spidernet_ray.supernet import SuperNet
from spidernet_ray.train import evaluate, make_optimizer, prune_after_epoch, train_epoch, train_step

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def pruned_supernet(dataset: str, epochs: int, channels: int, seed: int):
    root = SHARED_FASHION if dataset == "fashion_mnist" else None
    splits = load_dataset(dataset, root, seed=seed, subset=3000 if dataset == "fashion_mnist" else None)
    loaders = make_loaders(splits, batch_size=64, seed=seed)
    torch.manual_seed(seed)
    net = SuperNet(initial_genome(splits.input_shape, splits.num_classes, 2, channels).split_edge(0, 0, 2), window=1)
    optimizer = make_optimizer(net, lr=0.05)
    pressure = PressureCoefficient(value=1e-2)
    ops_before, params_before = net.genome.ops_alive(), net.num_params()
    for _ in range(epochs):
        train_epoch(net, optimizer, loaders.train, pressure=lambda: net.gate_pressure(lam=pressure.value))
        pressure.update(len(prune_after_epoch(net, optimizer)))
    accuracy, _ = evaluate(net, loaders.val)
    info = {"ops_before": ops_before, "ops_after": net.genome.ops_alive(), "params_before": params_before,
            "params_after": net.num_params(), "val_accuracy": accuracy,
            "closed_but_not_yet_deleted": net.genome.ops_alive() - sum(len(o) for o in net.open_ops().values())}
    return net, splits, loaders, info


def interleaved_step_times(models: dict, batch, steps: int) -> dict[str, float]:
    """Median train-step seconds per model, alternating models step by step so drift hits all alike."""
    optimizers = {name: make_optimizer(m) for name, m in models.items()}
    times = {name: [] for name in models}
    x, y = batch
    for name in models:  # warm-up
        train_step(models[name], optimizers[name], x, y)
    for _ in range(steps):
        for name, model in models.items():
            start = time.perf_counter()
            train_step(model, optimizers[name], x, y)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion_mnist"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    net, splits, loaders, info = pruned_supernet(args.dataset, args.epochs, args.channels, args.seed)
    discrete = net.to_discrete()
    deleted = copy.deepcopy(net)
    deleted.set_genome(deleted.discrete_genome())  # the closed ops deleted as deadheading will
    models = {"supernet": deleted, "supernet_as_trained": net, "discrete": discrete}
    batch = next(iter(loaders.train))
    step = interleaved_step_times(models, batch, args.steps)
    batch_size = batch[1].numel()
    measured = {name: measure_peak_memory(m, splits.input_shape, batch_size) for name, m in models.items()}
    memory = {name: mb for name, (mb, _) in measured.items()}
    method = measured["discrete"][1]
    result = {
        "step_time_ratio": step["supernet"] / step["discrete"],
        "memory_ratio": memory["supernet"] / memory["discrete"],
        "as_trained_step_time_ratio": step["supernet_as_trained"] / step["discrete"],
        "as_trained_memory_ratio": memory["supernet_as_trained"] / memory["discrete"],
        "supernet_step_ms": step["supernet"] * 1e3,
        "supernet_as_trained_step_ms": step["supernet_as_trained"] * 1e3,
        "discrete_step_ms": step["discrete"] * 1e3,
        "supernet_peak_memory_mb": memory["supernet"],
        "supernet_as_trained_peak_memory_mb": memory["supernet_as_trained"],
        "discrete_peak_memory_mb": memory["discrete"],
        "memory_method": method,
        "discrete_params": discrete.num_params(),
        **info,
        "settings": {**vars(args), "batch_size": batch_size, "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "machine": platform.machine(),
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pruning_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "pruning_overhead.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    s = r["settings"]
    return f"""# Pruning overhead: pruned supernet vs its to_discrete() network

{s['dataset']}, R=2, C={s['channels']}, batch {s['batch_size']}, CPU, {s['threads']} threads, torch {s['torch']},
{s['date']}. Produced by `python benchmarks/pruning_overhead.py --dataset {s['dataset']}`.

Pruning: {r['ops_before']} -> {r['ops_after']} ops alive ({r['closed_but_not_yet_deleted']} closed but not yet
deleted), {r['params_before']:,} -> {r['params_after']:,} supernet params; discrete network {r['discrete_params']:,}
params; val accuracy {r['val_accuracy']:.3f}.

| | supernet (closed ops deleted) | discrete | ratio (target <= 1.15) | supernet as trained | ratio |
|---|---:|---:|---:|---:|---:|
| train step (median of {s['steps']}, interleaved) | {r['supernet_step_ms']:.2f} ms | {r['discrete_step_ms']:.2f} ms | **{r['step_time_ratio']:.3f}** | {r['supernet_as_trained_step_ms']:.2f} ms | {r['as_trained_step_time_ratio']:.3f} |
| peak training memory ({r['memory_method']}) | {r['supernet_peak_memory_mb']:.2f} MB | {r['discrete_peak_memory_mb']:.2f} MB | **{r['memory_ratio']:.3f}** | {r['supernet_as_trained_peak_memory_mb']:.2f} MB | {r['as_trained_memory_ratio']:.3f} |
"""


if __name__ == "__main__":
    main()
