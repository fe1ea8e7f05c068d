"""What several test modules share that is not a fixture: paths and small runners."""

import importlib.util
import sys
from pathlib import Path

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


def launch_into_temp(tmp_path_factory, name: str, flags: list[str]):
    """``launch.main(flags)`` into a fresh storage path as experiment ``name``: (exit code, run folder)."""
    from spidernet_ray import launch

    storage = tmp_path_factory.mktemp("runs")
    code = launch.main(flags + ["--storage-path", str(storage), "--name", name])
    return code, storage / name
