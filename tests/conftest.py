import os

import pytest


def pytest_collection_modifyitems(items):
    """Tests that start a real local Ray (through the ``ray_local`` fixture) carry the ``ray`` marker, so
    ``-m "not ray and not subprocess"`` leaves the fast unit tests."""
    for item in items:
        if "ray_local" in item.fixturenames:
            item.add_marker(pytest.mark.ray)


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
