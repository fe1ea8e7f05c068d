"""The driver's own measurements (cost model, front check) print nothing on its output."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess

SCRIPT = """
import torch
from spidernet_ray.hardware import measure_peak_memory
from spidernet_ray.progress import native_output_dropped
from spidernet_ray.supernet import DiscreteNet
from spidernet_ray.genome import initial_genome
genome = initial_genome((1, 8, 8), 10, reductions=1, channels=4)
with native_output_dropped():
    measure_peak_memory(DiscreteNet(genome), genome.input_shape, batch_size=8)
print("measured")
"""


def test_the_profilers_native_start_and_stop_lines_do_not_reach_the_output():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "measured"
    assert "USDT" not in done.stdout + done.stderr and "profiler_start" not in done.stderr
