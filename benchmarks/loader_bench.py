"""Is the input pipeline fast enough? Batches/s it produces against train steps/s the network consumes.

On Fashion-MNIST (real files), at the training batch size, on one device:

* pipeline: one shuffled epoch of training batches, (a) under the policy ``make_loaders`` picks for
  this dataset and (b) with every augmentation switched on (crop + flip + cutout), the worst case;
* training: ``train_step`` of the default network (initial genome, R=2, C=16) on ready batches.

``speedup_over_training`` is the worst-case pipeline rate over the training rate; it should be >= 10
for data loading never to be what a trial waits on. Writes results/loader.json and results/loader.md.

    python benchmarks/loader_bench.py [--data-root DIR] [--device cpu] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from spidernet_ray.data import Batches, DataSplits, load_dataset, make_loaders
from spidernet_ray.genome import initial_genome
from spidernet_ray.supernet import SuperNet
from spidernet_ray.train import make_optimizer, train_step

REPO = Path(__file__).resolve().parents[1]
SHARED_FASHION = REPO.parent / "shared" / "data" / "fashion-mnist"
RESULTS = REPO / "benchmarks" / "results"
CUTOUT = 8  # the usual cutout side for 28-32 px images


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=SHARED_FASHION, help="folder with the Fashion-MNIST files")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="pipeline epochs timed (the best is kept)")
    parser.add_argument("--train-steps", type=int, default=5, help="train steps timed (the best is kept)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed train steps first")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline_rate(batches: Batches, epochs: int) -> float:
    """Best batches/s over whole epochs (on CUDA the final synchronise waits for queued batches).

    Best rather than median, for both rates: on a shared machine the slow runs measure the neighbours.
    """
    rates = []
    for _ in range(epochs):
        synchronize(batches.device)
        start = time.perf_counter()
        for _ in batches:
            pass
        synchronize(batches.device)
        rates.append(len(batches) / (time.perf_counter() - start))
    return max(rates)


def training_rate(splits: DataSplits, batches: Batches, device: torch.device, steps: int, warmup: int) -> float:
    """Best train steps/s of the default network, on batches prepared beforehand (data cost excluded)."""
    genome = initial_genome(input_shape=splits.input_shape, num_classes=splits.num_classes, reductions=2, channels=16)
    model = SuperNet(genome).to(device)
    optimizer = make_optimizer(model, lr=0.05, weight_decay=3e-4)
    ready = []
    for batch in batches:
        ready.append(batch)
        if len(ready) == warmup + steps:
            break
    durations = []
    for index, (x, y) in enumerate(ready):
        synchronize(device)
        start = time.perf_counter()
        train_step(model, optimizer, x, y)
        synchronize(device)
        if index >= warmup:
            durations.append(time.perf_counter() - start)
    return 1.0 / min(durations)


def write_markdown(path: Path, result: dict) -> None:
    pipeline, training = result["pipeline_batches_per_s"], result["training_steps_per_s"]
    lines = [
        "# Input pipeline vs training (Fashion-MNIST)",
        "",
        f"{result['device']}, batch size {result['batch_size']}, torch {result['torch']}, "
        f"{result['torch_threads']} threads, {result['timestamp']}. Produced by `benchmarks/loader_bench.py`.",
        "",
        "| what | rate | over training |",
        "|---|---:|---:|",
        f"| pipeline: {result['default_policy']} | {pipeline['default_policy']:.1f} batches/s "
        f"| {result['speedup_over_training_default_policy']:.0f}x |",
        f"| pipeline: {result['full_augmentation']} | {pipeline['full_augmentation']:.1f} batches/s "
        f"| **{result['speedup_over_training']:.0f}x** |",
        f"| training, default network (R=2, C=16) | {training:.3f} steps/s | 1x |",
        "",
        "`speedup_over_training` (bold) is the worst case: the pipeline must stay >= 10x ahead of training.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    splits = load_dataset("fashion_mnist", args.data_root, seed=0)

    policy_batches = make_loaders(splits, args.batch_size, device, augment=True, seed=0).train
    full_batches = Batches(
        splits.x_train, splits.y_train, args.batch_size, mean=splits.mean, std=splits.std, device=device,
        shuffle=True, drop_last=True, crop_padding=splits.input_shape[1] // 8, flip=True, cutout=CUTOUT, seed=0,
    )
    default_rate = pipeline_rate(policy_batches, args.epochs)
    full_rate = pipeline_rate(full_batches, args.epochs)
    train_rate = training_rate(splits, full_batches, device, args.train_steps, args.warmup_steps)

    result = {
        "dataset": "fashion_mnist",
        "device": str(device),
        "batch_size": args.batch_size,
        "train_examples": len(splits.y_train),
        "default_policy": "shuffle + normalise (make_loaders' policy for glyphs)",
        "full_augmentation": f"shuffle + crop (pad {full_batches.crop_padding}) + flip + normalise + cutout {CUTOUT}",
        "pipeline_batches_per_s": {"default_policy": default_rate, "full_augmentation": full_rate},
        "training_steps_per_s": train_rate,
        "speedup_over_training": full_rate / train_rate,
        "speedup_over_training_default_policy": default_rate / train_rate,
        "timed": {"pipeline_epochs": args.epochs, "train_steps": args.train_steps, "warmup_steps": args.warmup_steps},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "loader.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.output / "loader.md", result)

    print(f"pipeline, dataset policy:   {default_rate:10.1f} batches/s")
    print(f"pipeline, all augmentation: {full_rate:10.1f} batches/s")
    print(f"training, default network:  {train_rate:10.3f} steps/s")
    print(f"speedup_over_training:      {full_rate / train_rate:10.0f}x (worst case)")
    print(f"  with the dataset's policy:  {default_rate / train_rate:10.0f}x")


if __name__ == "__main__":
    main()
