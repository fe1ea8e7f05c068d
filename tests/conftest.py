import importlib.util
import os
import sys
from pathlib import Path

import pytest

SHARED_FASHION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-mnist"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py``. Its folder goes on the path first: the scripts import their
    sibling provenance.py, as when run from there."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray for the tests that need one (2 CPUs, no dashboard), shut down at the end."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def torch_one_thread():
    """Tiny networks run fastest on one thread, and timings stay steadier on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def launch_into_temp(tmp_path_factory, name: str, flags: list[str]):
    """``launch.main(flags)`` into a fresh storage path as experiment ``name``: (exit code, run folder)."""
    from spidernet_ray import launch

    storage = tmp_path_factory.mktemp("runs")
    code = launch.main(flags + ["--storage-path", str(storage), "--name", name])
    return code, storage / name
