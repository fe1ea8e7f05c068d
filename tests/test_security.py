"""The local Ray the launcher starts serves no dashboard web UI unless asked, and its dashboard
process listens on 127.0.0.1 only, with or without the UI."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

KEEP_RAY_UP = """
import sys
from spidernet_ray.tuner import start_ray
start_ray(None, 1, 0, 0, dashboard=sys.argv[1] == "on")
print("up", flush=True)
sys.stdin.readline()
"""


def dashboard_command_line(dashboard: str) -> list[str]:
    """The command line of the dashboard process of a Ray started by ``start_ray``."""
    ray_tmp = tempfile.mkdtemp(prefix="sn-", dir="/tmp")  # identifies this Ray's processes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_ADDRESS": ""}
    proc = subprocess.Popen([sys.executable, "-c", KEEP_RAY_UP, dashboard], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "up"
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(a.endswith("dashboard/dashboard.py") for a in args) and any(ray_tmp in a for a in args):
                return args
        return []
    finally:
        proc.communicate("\n", timeout=60)  # ray.shutdown at exit stops what it started
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_dashboard_is_off_by_default_and_bound_to_localhost():
    args = dashboard_command_line("off")
    assert args, "no dashboard process found"
    assert "--host=127.0.0.1" in args and "--disable-frontend" in args


def test_a_requested_dashboard_is_bound_to_localhost():
    pytest.importorskip("ray.dashboard.optional_deps", reason="Ray's dashboard packages (ray[default]) are absent")
    args = dashboard_command_line("on")
    assert "--host=127.0.0.1" in args and "--disable-frontend" not in args
