"""Which code a benchmark measured: the commit, and whether the working tree differed from it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def code_version(paths: tuple[str, ...] = ("spidernet_ray",)) -> str:
    """``git <short hash>``, plus a mark when ``paths`` have uncommitted changes. ``BENCHMARK_CODE_VERSION``
    names the code instead, for a run from a copy of the tree (workers import the code from disk, so a
    long run is best made from a copy nobody edits)."""
    if os.environ.get("BENCHMARK_CODE_VERSION"):
        return os.environ["BENCHMARK_CODE_VERSION"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *paths], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"git {head}" + (f" + uncommitted changes in {', '.join(paths)}" if dirty else "")
