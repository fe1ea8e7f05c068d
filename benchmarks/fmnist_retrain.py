"""Final training after a Fashion-MNIST search: the best front member under a parameter cap, retrained
from scratch on the full training set and tested once on the official test split.

Runs the retrain command as a user would (a child process, timed from start to exit), then writes
results/fmnist_retrain.json and results/fmnist_retrain.md: the run's retrain.md under a header saying how
it was made, with the validation accuracy after every epoch.

    python benchmarks/fmnist_retrain.py RUN_DIR [--epochs 10] [--max-params 100000] [--cpus 2]

RUN_DIR is a finished Fashion-MNIST search, e.g. the one ``benchmarks/fmnist_search.py`` makes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from spidernet_ray.config import OneLineArgumentParser
from provenance import REPO, code_version  # benchmarks/provenance.py, beside this script

RESULTS = Path(__file__).resolve().parent / "results"
ROW_FIELDS = ("genome_hash", "source_trial", "source_round", "search_val_accuracy", "search_params", "epochs",
              "val_accuracy", "test_accuracy", "test_loss", "params", "flops", "latency_ms", "peak_memory_mb",
              "memory_method", "train_seconds", "seconds_per_epoch", "device", "train_examples", "val_examples",
              "test_examples", "lr", "cutout", "seed", "error")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a finished Fashion-MNIST search (<storage-path>/<name>)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-params", type=int, default=100_000)
    p.add_argument("--cutout", type=int, default=0, help="cutout square side in pixels (0: off)")
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray, all for the one trial")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.max_params < 1 or args.cpus < 1:
        p.error("--epochs, --max-params and --cpus must be positive")
    return args


def command(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "spidernet_ray.retrain", str(args.run_dir), "--front", "--max-params",
            str(args.max_params), "--top", "1", "--epochs", str(args.epochs), "--cutout", str(args.cutout),
            "--num-cpus", str(args.cpus), "--cpus-per-trial", str(args.cpus)]


def fail(message: str) -> None:
    print(f"fmnist_retrain.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def epoch_history(retrain_dir: Path, genome_hash: str) -> list[dict]:
    """Validation accuracy and train loss after each epoch, from the newest Tune run that trained it."""
    for tune_dir in sorted(retrain_dir.glob("tune-*"), reverse=True):
        for result in tune_dir.glob(f"*{genome_hash}*/result.json"):
            rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
            return [{k: r.get(k) for k in ("epoch", "val_accuracy", "train_loss", "train_seconds")} for r in rows]
    return []


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    config_file = args.run_dir / "search_config.json"
    if not config_file.is_file() or not (args.run_dir / "pareto.parquet").is_file():
        fail(f"{args.run_dir} holds no finished search (search_config.json, pareto.parquet)")
    search = json.loads(config_file.read_text())
    if search["dataset"] != "fashion_mnist":
        fail(f"{args.run_dir} is a search on {search['dataset']}, not Fashion-MNIST")
    cmd = command(args)
    start = time.perf_counter()
    code = subprocess.run(cmd, cwd=REPO).returncode
    wall = time.perf_counter() - start
    if code != 0:
        fail(f"the retrain exited with {code}; its files are in {args.run_dir / 'retrain'}")
    retrain_dir = args.run_dir / "retrain"
    row = max(pq.read_table(retrain_dir / "retrain.parquet").to_pylist(), key=lambda r: r["retrained_at"])
    report = {
        "wall_seconds": round(wall, 1),
        "command": " ".join(["python", *cmd[1:]]),
        "search": {k: search.get(k) for k in ("subset", "population", "rounds", "epochs_per_round", "channels",
                                              "reductions", "batch_size", "seed")},
        "retrained": {k: row.get(k) for k in ROW_FIELDS},
        "epochs": epoch_history(retrain_dir, row["genome_hash"]),
        "load_average_after": os.getloadavg()[0],
        "code": code_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "fmnist_retrain.json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(report, (retrain_dir / "retrain.md").read_text(), args.output / "fmnist_retrain.md")
    print(f"{wall:.0f} s, test accuracy {row['test_accuracy']:.2%} ({row['params']:,} params); "
          f"wrote {args.output / 'fmnist_retrain.md'}")
    return report


def write_markdown(report: dict, table: str, path: Path) -> None:
    r, s = report["retrained"], report["search"]
    curve = ", ".join(f"{e['val_accuracy']:.2%}" for e in report["epochs"]) or "not found"
    data = f"a {s['subset']}-example subset" if s["subset"] else "the full training set"
    lines = [
        "# Fashion-MNIST: the best searched network under the parameter cap, retrained from scratch",
        "",
        f"Command (CPU, {os.cpu_count()} cores, {report['date']}, code {report['code']}; "
        f"load average {report['load_average_after']:.1f} at the end):",
        "",
        "    " + report["command"],
        "",
        f"The search ({s['population']} members, {s['rounds']} rounds x {s['epochs_per_round']} epochs on "
        f"{data}, {s['channels']} channels, {s['reductions']} reductions) picked "
        f"`{r['genome_hash']}` (trial {r['source_trial']}, round {r['source_round']}, "
        f"{r['search_val_accuracy']:.2%} search validation accuracy). Its weights were thrown away; the network "
        f"was trained for {r['epochs']} epochs on {r['train_examples']:,} training examples, validated on "
        f"{r['val_examples']:,} and tested once on the {r['test_examples']:,}-example official test split.",
        "",
        f"**Test accuracy {r['test_accuracy']:.2%}** with {r['params']:,} parameters. "
        f"Wall time {report['wall_seconds'] / 60:.1f} min (retrain start to exit, timed by this script), "
        f"{r['seconds_per_epoch']:.0f} s per epoch.",
        "",
        f"Validation accuracy after each epoch: {curve}.",
        "",
        "Raw figures: `fmnist_retrain.json`. The run's own table:",
        "",
    ]
    path.write_text("\n".join(lines) + table.split("\n", 1)[1])


if __name__ == "__main__":
    main()
