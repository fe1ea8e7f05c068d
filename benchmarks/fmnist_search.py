"""The Fashion-MNIST search of ``configs/fashion_mnist.toml`` on this machine: wall time and its front.

Runs the launcher as a user would (a child process, timed from start to exit), then writes
results/fmnist_search.json, results/fmnist_search.md (the run's own summary.md under a header saying
how it was made) and results/fmnist_search_pareto.png (the run's pareto.png).

    python benchmarks/fmnist_search.py [--data-root ../shared/data/fashion-mnist] [--storage-path /tmp/fm]

``--render RUN_DIR --wall-seconds S [--storage-path P]`` writes the results of a run already made with
the command this script prints for ``--storage-path P``, timed by the caller (the JSON says so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from spidernet_ray.config import OneLineArgumentParser
from provenance import REPO, code_version  # benchmarks/provenance.py, beside this script

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = REPO / "configs" / "fashion_mnist.toml"
NAME = "fmnist"
RUN_FILES = ("search_config.json", "trials.parquet", "pareto.parquet", "summary.md", "pareto.png")
FRONT_FIELDS = ("trial_id", "training_iteration", "val_accuracy", "latency_ms", "peak_memory_mb", "params", "flops",
                "genome_hash")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data/fashion-mnist", help="relative to the repository root")
    p.add_argument("--storage-path", type=Path, default=Path("/tmp/spidernet-fmnist-search"))
    p.add_argument("--render", type=Path, metavar="RUN_DIR", help="write the results of this finished run")
    p.add_argument("--wall-seconds", type=float, help="with --render: the run's wall time, as the caller measured it")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if (args.render is None) != (args.wall_seconds is None):
        p.error("--render and --wall-seconds go together")
    return args


def command(data_root: str, storage_path: Path) -> list[str]:
    return [sys.executable, "-m", "spidernet_ray.launch", "--config", str(CONFIG.relative_to(REPO)),
            "--data-root", data_root, "--storage-path", str(storage_path), "--name", NAME]


def fail(message: str) -> None:
    print(f"fmnist_search.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cmd = command(args.data_root, args.storage_path)
    if args.render:
        run_dir, wall, timed_by = args.render, args.wall_seconds, "the caller, who ran the command"
    else:
        shutil.rmtree(args.storage_path / NAME, ignore_errors=True)
        start = time.perf_counter()
        code = subprocess.run(cmd, cwd=REPO).returncode
        run_dir, wall, timed_by = args.storage_path / NAME, time.perf_counter() - start, "this script"
        if code != 0:
            fail(f"the search exited with {code}; its files are in {run_dir}")
    if not all((run_dir / name).is_file() for name in RUN_FILES):  # checked before anything is written
        fail(f"{run_dir} holds no finished search ({', '.join(RUN_FILES)})")
    config = json.loads((run_dir / "search_config.json").read_text())
    if config["dataset"] != "fashion_mnist":
        fail(f"{run_dir} is a search on {config['dataset']}, not Fashion-MNIST")
    rows = pq.read_table(run_dir / "trials.parquet").to_pylist()
    front = pq.read_table(run_dir / "pareto.parquet").to_pylist()
    report = {
        "wall_seconds": round(wall, 1),
        "timed_by": timed_by,
        "command": " ".join(["python", *cmd[1:]]),
        "config": config,
        "rows": len(rows),
        "best_val_accuracy": max(r["val_accuracy"] for r in rows),
        "front": [{k: r.get(k) for k in FRONT_FIELDS} for r in front],
        "load_average_after": None if args.render else os.getloadavg()[0],  # a rendering comes later
        "code": code_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "fmnist_search.json").write_text(json.dumps(report, indent=1) + "\n")
    shutil.copyfile(run_dir / "pareto.png", args.output / "fmnist_search_pareto.png")
    summary = (run_dir / "summary.md").read_text().replace("](pareto.png)", "](fmnist_search_pareto.png)")
    load = report["load_average_after"]
    load_text = "load average not recorded" if load is None else f"load average {load:.1f} at the end"
    header = [
        "# Fashion-MNIST search within the 30-minute budget (issue 5)",
        "",
        f"Command (CPU, {os.cpu_count()} cores, {report['date']}, code {report['code']}; {load_text}):",
        "",
        "    " + report["command"],
        "",
        f"Wall time: **{int(wall // 60)} min {int(wall % 60)} s** (launcher start to exit, timed by {timed_by}). "
        f"Best validation accuracy {report['best_val_accuracy']:.2%}, a front of {len(front)}. "
        "Validation accuracy only: the test split is not used in a search. Raw figures: `fmnist_search.json`.",
        "",
        "The run's own summary:",
        "",
    ]
    (args.output / "fmnist_search.md").write_text("\n".join(header) + summary.split("\n", 1)[1])
    print(f"{wall:.0f} s, best val acc {report['best_val_accuracy']:.2%}, front {len(front)}; "
          f"wrote {args.output / 'fmnist_search.md'}")
    return report


if __name__ == "__main__":
    main()
