"""The estimate-quality benchmark (benchmarks/estimate_quality.py): bad input is one line and exit 2 with
nothing written; on real architectures it reports agreement and costs for each estimate."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import BENCHMARKS, load_benchmark
from spidernet_ray.genome import initial_genome

pytestmark = pytest.mark.subprocess

estimate_quality = load_benchmark("estimate_quality")


def run_script(*args):
    return subprocess.run([sys.executable, str(BENCHMARKS / "estimate_quality.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def write_run(run_dir, genomes):
    """A search's trials.parquet with one row per genome (the columns the script reads)."""
    run_dir.mkdir()
    rows = [{"genome": g.to_json(), "batch_size": 16, "latency_batch_size": 1} for g in genomes]
    pq.write_table(pa.Table.from_pylist(rows), run_dir / "trials.parquet")
    return run_dir


def test_a_directory_without_search_results_is_one_line_and_exit_2(tmp_path):
    output = tmp_path / "out"
    good = write_run(tmp_path / "good", [initial_genome((1, 8, 8), 10, reductions=1, channels=4)])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "trials.parquet").write_bytes(b"not parquet")
    for run_dirs in ([tmp_path / "absent"], [good, tmp_path / "broken"]):
        done = run_script(*run_dirs, "--output", output)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and "estimate_quality.py: error:" in done.stderr
        assert str(run_dirs[-1]) in done.stderr
    assert not output.exists()



def test_a_bad_flag_is_one_line_and_exit_2(tmp_path):
    done = run_script(tmp_path, "--repeats", "0", "--output", tmp_path / "out")
    assert done.returncode == 2 and done.stderr == "estimate_quality.py: error: --repeats must be at least 1 (see --help)\n"
    assert not (tmp_path / "out").exists()


def test_each_estimate_is_compared_with_the_measurement_on_every_architecture(tmp_path, torch_one_thread):
    genome = initial_genome((1, 8, 8), 10, reductions=1, channels=4)
    genomes = [genome, genome.split_edge(0, 0, 2), genome.split_edge(1, 1, 3), genome.remove_op(0, 0, 2, "sep_conv_5x5")]
    run_dir = write_run(tmp_path / "run", [*genomes, genomes[0]])

    report = estimate_quality.main([str(run_dir), "--repeats", "2", "--output", str(tmp_path / "out")])
    (search,) = report["searches"]
    assert search["architectures"] == 4 and search["batch_size"] == 16  # the repeated genome counts once
    assert len(search["runs"]) == 2
    for run in search["runs"]:
        assert {r["genome_hash"] for r in run["rows"]} == {g.hash for g in genomes}
        for row in run["rows"]:
            assert row["latency_ms"] > 0 and row["latency_table_ms"] > 0
            assert row["peak_memory_mb"] > row["memory_floor_mb"] > 0  # the floor leaves out gradients, temporaries
    for name, _, _ in estimate_quality.COMPARISONS:
        tau = search["comparisons"][name]["kendall_tau"]
        assert -1 <= tau["min"] <= tau["median"] <= tau["max"] <= 1
        assert search["comparisons"][name]["median_error"]["median"] >= 0
    saved = json.loads((tmp_path / "out" / "estimate_quality.json").read_text())
    assert saved["searches"][0]["architectures"] == 4
    assert "memory, counted floor" in (tmp_path / "out" / "estimate_quality.md").read_text()
