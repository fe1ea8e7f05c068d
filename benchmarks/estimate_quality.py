"""Could cheap estimates stand in for measuring a network's latency and training memory every round?

The search measures every architecture a member reports (``hardware.measure``): about 0.35 s a round
for the digits network, 12 % of wall x CPUs in the 2-s-step overhead benchmark. This script takes
every distinct architecture a finished search reported (its ``trials.parquet``) and compares, on this
machine, with one thread:

* latency measured (median of 10 timed forward passes, as the search does) against the same
  measurement taken again, the reference for how well any estimate can agree;
* latency estimated as the sum of per-op latencies from ``hardware.OpCostTable`` (each op, channel
  count, stride and resolution timed once, then looked up);
* peak training memory measured (torch's profiler over one training step) against
  ``hardware.training_memory_floor`` (bytes counted during a forward pass, no profiler, no backward).

For each: Kendall tau and Pearson r against the measurement, the median and largest relative error
after a least-squares line, and the seconds each takes per architecture. Timings on a shared machine
are noisy, so the whole comparison runs ``--repeats`` times (the per-op table built anew each time) and
the report gives the median and range over repeats. Writes results/estimate_quality.json and
results/estimate_quality.md.

    python benchmarks/estimate_quality.py RUN_DIR [RUN_DIR ...] [--repeats 3]

A RUN_DIR is a finished search: the default launch's, or the Fashion-MNIST one that
``fmnist_end_to_end.py --keep --storage DIR`` leaves in ``DIR/search-seed0``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from scipy.stats import kendalltau, pearsonr

from spidernet_ray.config import OneLineArgumentParser
from spidernet_ray.genome import Genome, GenomeError
from spidernet_ray.hardware import OpCostTable, measure_latency, measure_peak_memory, training_memory_floor
from spidernet_ray.supernet import DiscreteNet
from spidernet_ray.train import TRAINING_LAYOUT
from provenance import code_version  # benchmarks/provenance.py, beside this script

RESULTS = Path(__file__).resolve().parent / "results"
COMPARISONS = (  # (name, estimate, measurement it stands in for)
    ("latency measured again", "latency_again_ms", "latency_ms"),
    ("latency, per-op table sum", "latency_table_ms", "latency_ms"),
    ("memory, counted floor", "memory_floor_mb", "peak_memory_mb"),
)
COSTS = ("latency_seconds", "table_seconds", "memory_seconds", "floor_seconds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", type=Path, nargs="+", help="finished searches (<storage-path>/<name>)")
    p.add_argument("--repeats", type=int, default=3, help="times the whole comparison runs")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def fail(message: str) -> None:
    print(f"estimate_quality.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def architectures(run_dir: Path) -> tuple[list[Genome], int, int]:
    """The distinct discrete genomes a search reported, and its (training, latency) batch sizes."""
    try:
        rows = pq.read_table(run_dir / "trials.parquet",
                             columns=["genome", "batch_size", "latency_batch_size"]).to_pylist()
        genomes = [Genome.from_json(g) for g in dict.fromkeys(r["genome"] for r in rows if r["genome"])]
    except (OSError, ValueError, KeyError, GenomeError) as exc:  # pyarrow's errors are OSError or ValueError
        fail(f"{run_dir} holds no readable search results ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    if not genomes:
        fail(f"{run_dir} reported no architecture")
    return genomes, int(rows[0]["batch_size"]), int(rows[0]["latency_batch_size"])


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def compare_one(genome: Genome, table: OpCostTable, batch_size: int, latency_batch_size: int) -> dict:
    shape = genome.input_shape
    net = DiscreteNet(genome).to(memory_format=TRAINING_LAYOUT)  # as the search measures it
    (latency, _), latency_seconds = timed(lambda: measure_latency(net, shape, latency_batch_size))
    latency_again, _ = measure_latency(net, shape, latency_batch_size)
    table_ms, table_seconds = timed(lambda: sum(table(op, e.channels, e.stride, e.resolution)
                                                for e in net.mixed_edges() for op in e.op_names))
    (memory, _), memory_seconds = timed(lambda: measure_peak_memory(net, shape, batch_size))
    floor, floor_seconds = timed(lambda: training_memory_floor(net, shape, batch_size))
    return {"genome_hash": genome.hash, "ops": genome.ops_alive(), "latency_ms": latency,
            "latency_again_ms": latency_again, "latency_table_ms": table_ms, "peak_memory_mb": memory,
            "memory_floor_mb": floor, "latency_seconds": latency_seconds, "table_seconds": table_seconds,
            "memory_seconds": memory_seconds, "floor_seconds": floor_seconds}


def agreement(estimate: list[float], measured: list[float]) -> dict:
    """Rank and linear agreement of an estimate with a measurement (None where undefined)."""
    x, y = np.asarray(estimate), np.asarray(measured)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"kendall_tau": None, "pearson_r": None, "median_error": None, "max_error": None}
    slope, intercept = np.polyfit(x, y, 1)
    errors = np.abs(intercept + slope * x - y) / y
    return {"kendall_tau": float(kendalltau(x, y)[0]), "pearson_r": float(pearsonr(x, y)[0]),
            "median_error": float(np.median(errors)), "max_error": float(np.max(errors)),
            "slope": float(slope), "intercept": float(intercept)}


def compare_all(genomes: list[Genome], batch_size: int, latency_batch_size: int) -> dict:
    """One repeat: every architecture measured and estimated, with a per-op table built anew."""
    table = OpCostTable("latency", batch_size=latency_batch_size)
    rows = [compare_one(g, table, batch_size, latency_batch_size) for g in genomes]
    return {
        "table_entries": table.measurements,
        "comparisons": {name: agreement([r[est] for r in rows], [r[ref] for r in rows])
                        for name, est, ref in COMPARISONS},
        # The first architecture pays for the table's entries and torch's first-call costs.
        "median_seconds": {k: statistics.median(r[k] for r in rows[1:] or rows) for k in COSTS},
        "first_seconds": {k: rows[0][k] for k in COSTS},
        "rows": rows,
    }


def over_repeats(values: list[float | None]) -> dict:
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(known), "min": min(known), "max": max(known)}


def study(run_dir: Path, genomes: list[Genome], batch_size: int, latency_batch_size: int, repeats: int) -> dict:
    runs = [compare_all(genomes, batch_size, latency_batch_size) for _ in range(repeats)]
    return {
        "run_dir": str(run_dir),
        "input_shape": list(genomes[0].input_shape),
        "architectures": len(genomes),
        "batch_size": batch_size,
        "latency_batch_size": latency_batch_size,
        "repeats": repeats,
        "table_entries": runs[0]["table_entries"],
        "comparisons": {name: {stat: over_repeats([run["comparisons"][name][stat] for run in runs])
                               for stat in ("kendall_tau", "pearson_r", "median_error", "max_error")}
                        for name, _, _ in COMPARISONS},
        "median_seconds": {k: statistics.median(run["median_seconds"][k] for run in runs) for k in COSTS},
        "runs": runs,
    }


def _cell(stat: dict, show) -> str:
    """The median over repeats, with the range when it varied."""
    if stat["median"] is None:
        return "n/a"
    if stat["min"] == stat["max"]:
        return show(stat["median"])
    return f"{show(stat['median'])} ({show(stat['min'])}..{show(stat['max'])})"


def _tau(value: float) -> str:
    return f"{value:+.2f}"


def _r(value: float) -> str:
    return f"{value:+.3f}"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Cheap estimates against measured latency and memory",
        "",
        f"Every distinct architecture a finished search reported, measured and estimated here with one thread; "
        f"{report['machine']}, torch {torch.__version__}, {report['date']}, code {report['code']}. "
        "Error = |line fit - measured| / measured after a least-squares line through (estimate, measured). "
        f"Each cell: the median over {report['repeats']} repeats, and their range.",
        "",
        "| search | architectures | comparison | Kendall tau | Pearson r | median error | largest error |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for s in report["searches"]:
        for name, a in s["comparisons"].items():
            lines.append(f"| {s['label']} | {s['architectures']} | {name} | {_cell(a['kendall_tau'], _tau)} | "
                         f"{_cell(a['pearson_r'], _r)} | {_cell(a['median_error'], _percent)} | "
                         f"{_cell(a['max_error'], _percent)} |")
    lines += ["", "Seconds per architecture (median over all but the first, which pays for the per-op table's "
              "entries and torch's first calls; median over repeats):", "",
              "| search | latency measured | latency from table | memory measured | memory floor | table entries |",
              "|---|---:|---:|---:|---:|---:|"]
    for s in report["searches"]:
        m = s["median_seconds"]
        lines.append(f"| {s['label']} | {m['latency_seconds']:.4f} | {m['table_seconds']:.5f} | "
                     f"{m['memory_seconds']:.4f} | {m['floor_seconds']:.4f} | {s['table_entries']} |")
    lines += ["", "Produced by:", "", "```", report["command"], "```", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    for run_dir in args.run_dirs:
        if not (run_dir / "trials.parquet").is_file():
            fail(f"{run_dir} holds no finished search (trials.parquet)")
    read = {run_dir: architectures(run_dir) for run_dir in args.run_dirs}  # every input checked before any work
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a member's share: one intra-op thread
    try:
        searches = []
        for run_dir in args.run_dirs:
            result = study(run_dir, *read[run_dir], args.repeats)
            result["label"] = f"{run_dir.name} ({'x'.join(map(str, result['input_shape']))})"
            searches.append(result)
    finally:
        torch.set_num_threads(threads)
    report = {
        "searches": searches,
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": code_version(),
        "command": "python benchmarks/estimate_quality.py " + " ".join(map(str, args.run_dirs))
                   + f" --repeats {args.repeats}",
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "estimate_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.output / "estimate_quality.md")
    print((args.output / "estimate_quality.md").read_text())
    return report


if __name__ == "__main__":
    main()
