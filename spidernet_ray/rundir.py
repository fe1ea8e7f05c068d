"""The files of a run directory ``<storage-path>/<name>/``: every name, one atomic writer, and the
repair of Ray's experiment snapshots after a killed driver.

Ray's own files (its experiment snapshots, one folder per trial with its checkpoints) sit beside ours:

    search_config.json    the run description (config.SearchConfig), written before the search starts
    rows.jsonl            every reported row, appended as it reaches the driver
    scheduler/state.json  the scheduler's genealogy, Pareto archive and scores (read back on resume)
    trials.parquet, pareto.parquet, genealogy.parquet, pareto.png, summary.md   written at the end (results)
    report.md, report/    spidernet_ray.report
    retrain/              spidernet_ray.retrain: retrain.parquet, retrain.md, one folder per model
"""

from __future__ import annotations

import json
import math
import os
import pickletools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_FILE = "search_config.json"
# Every reported row, appended by the launcher's callback. Ray's own per-trial result.json is not
# used: it loses rows when a paused trial moves to another actor and its folder is re-synced.
ROWS_FILE = "rows.jsonl"
# Not a .json file at the top of the run directory: on --resume Ray copies every such file into its
# staging folder and uploads the copies back over the originals at each snapshot, so a state the
# scheduler rewrote after the resume would be put back to what it was when the resume started.
STATE_FILE = "scheduler/state.json"
LEGACY_STATE_FILE = "scheduler_state.json"  # where runs before the move kept it
COST_MODEL_FILE = "hardware/cost_model.json"  # per-op tables measured once per run (costmodel.CostModel)
FRONT_CHECK_FILE = "hardware/front_check.json"  # the final front measured for real against its estimates
TRIALS_FILE = "trials.parquet"
PARETO_FILE = "pareto.parquet"
GENEALOGY_FILE = "genealogy.parquet"
PLOT_FILE = "pareto.png"
SUMMARY_FILE = "summary.md"
REPORT_FILE = "report.md"
FIGURES_DIR = "report"
RETRAIN_DIR = "retrain"
RETRAIN_TABLE = "retrain.parquet"
RETRAIN_MARKDOWN = "retrain.md"


class RunDirError(ValueError):
    """A run directory that cannot be used as it is; reported in one line."""


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through ``write(tmp)`` to a temporary file beside ``path``, then move it into place:
    readers (and a driver killed mid-write) see the old file or the new one, never half of one."""
    path = Path(path)
    descriptor, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# Ray copies its experiment snapshots into the storage path without an atomic rename: a driver killed
# mid-copy leaves the newest empty or cut short, and Tuner.restore would then start the search over.
# The launcher keeps the last copy of each that parsed beside it, and puts it back before --resume.
# Names end in a sortable time. The searcher's file is a pickle despite its name.
RAY_SNAPSHOTS = ("experiment_state-*.json", "basic-variant-state-*.json")
GOOD_COPY = ".last_good"


def keep_good_state_copies(path: Path, copied: dict) -> None:
    """Copy each of Ray's newest snapshots that parses to ``<name>.last_good`` (``copied`` remembers
    what was copied, so an unchanged snapshot is not read again)."""
    for pattern in RAY_SNAPSHOTS:
        newest = max(path.glob(pattern), default=None)
        if newest is None:
            continue
        stat = newest.stat()
        if copied.get(newest.name) == (stat.st_mtime_ns, stat.st_size):
            continue
        data = newest.read_bytes()
        if _parses(data):  # else Ray is writing it right now; the previous copy stays
            atomic_write(newest.with_name(newest.name + GOOD_COPY), lambda tmp: tmp.write_bytes(data))
            copied[newest.name] = (stat.st_mtime_ns, stat.st_size)


def restore_cut_short_snapshots(path: Path) -> None:
    """Before ``--resume``: put back the last good copy of a Ray snapshot a killed driver cut short."""
    for pattern in RAY_SNAPSHOTS:
        newest = max(path.glob(pattern), default=None)
        if newest is None or _parses(newest.read_bytes()):
            continue
        good = newest.with_name(newest.name + GOOD_COPY)
        if not good.is_file():
            raise RunDirError(f"cannot resume: Ray's snapshot {newest} is cut short and no good copy was kept")
        atomic_write(newest, lambda tmp: tmp.write_bytes(good.read_bytes()))
        print(f"{newest.name} was cut short when the driver stopped; resuming from its last good copy",
              file=sys.stderr, flush=True)


def _parses(data: bytes) -> bool:
    """Whether a snapshot is complete: JSON that decodes, or a pickle whose opcodes run to STOP
    (walked with pickletools, which builds no objects, so nothing in it runs)."""
    if data.startswith(b"\x80"):
        try:
            return any(opcode.name == "STOP" for opcode, _, _ in pickletools.genops(data))
        except Exception:  # pickletools raises ValueError and others on a cut-short stream
            return False
    try:
        json.loads(data)
        return True
    except ValueError:
        return False
