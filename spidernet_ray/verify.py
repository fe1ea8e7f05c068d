"""Whether a run directory's record is whole: ``python -m spidernet_ray.report RUN --check``.

Four hands write a search's record, one after the other for each result: the launcher's callback
appends the row to ``rows.jsonl``, then commits the scheduler's state (genealogy, Pareto archive),
then Ray snapshots the experiment (each member's config and checkpoints); the result tables are
written once the search ends. A driver killed at any of these moments and resumed must leave parts
that agree. Each check below is one such agreement and returns its violations, one line each.

No Ray import, and nothing in the directory is unpickled: Ray's snapshot is walked with pickletools.
"""

from __future__ import annotations

import json
import pickletools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from spidernet_ray.config import ConfigError, read_run_config
from spidernet_ray.record import decode
from spidernet_ray.results import mutation_id, read_reported_rows, read_state
from spidernet_ray.rundir import GENEALOGY_FILE, TRIALS_FILE

RAY_SNAPSHOTS = "experiment_state-*.json"
CHECKPOINT = re.compile(r"checkpoint_\d+$")


@dataclass
class Check:
    violations: list[str]
    summary: str  # one line: what was checked

    @property
    def ok(self) -> bool:
        return not self.violations


def check_run(run_dir: str | Path) -> Check:
    run_dir = Path(run_dir)
    rows = read_reported_rows(run_dir)
    state = read_state(run_dir)
    genealogy = state.get("genealogy") or []
    archive = (state.get("archive") or {}).get("entries") or []
    try:
        config = read_run_config(run_dir)
    except ConfigError:
        config = None  # no saved config: rounds cannot be judged against it
    checkpoints, snapshot_violations = latest_checkpoints(run_dir)
    violations = [
        *genealogy_matches_rows(rows, genealogy),
        *archive_was_reported(rows, archive),
        *rounds_are_covered(rows, config and config.rounds, config and config.population),
        *tables_match(run_dir, rows, genealogy),
        *snapshot_violations,
        *[f"checkpoint {path} of trial {trial}, named in Ray's snapshot, does not exist"
          for trial, path in checkpoints.items() if not path.is_dir()],
    ]
    members = len({row.get("trial_id") for row in rows})
    undone = sum(1 for entry in genealogy if entry.get("undone"))
    summary = (f"ok: {run_dir} | {len(rows)} rows of {members} members, {len(genealogy)} exploits "
               f"({undone} undone by a resume), {len(archive)} archive entries, {len(checkpoints)} checkpoints")
    return Check(violations, summary)


def genealogy_matches_rows(rows: Sequence[Mapping[str, Any]], genealogy: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every mutation instruction a row carried out or ran under is in the genealogy; every exploit in
    the genealogy was carried out in some row, unless a resume undid it (the member went on from
    before it: see SpiderNetScheduler._mark_undone)."""
    ids = [entry["mutation"]["id"] for entry in genealogy]
    violations = [f"genealogy: exploit {i} is recorded {n} times" for i, n in Counter(ids).items() if n > 1]
    carried = {mutation_id(row) for row in rows} - {None}
    seen = set()
    for row in rows:
        config = row.get("config") if isinstance(row.get("config"), Mapping) else {}
        for instruction in (mutation_id(row), (config.get("mutation") or {}).get("id")):
            if instruction and instruction not in ids and instruction not in seen:
                seen.add(instruction)
                violations.append(f"rows: trial {row.get('trial_id')} round {row.get('training_iteration')} ran "
                                  f"mutation {instruction}, which is not in the genealogy")
    for entry in genealogy:
        if not entry.get("undone") and entry["mutation"]["id"] not in carried:
            violations.append(f"genealogy: exploit {entry['mutation']['id']} ({entry['child']} cloned from "
                              f"{entry['donor']} at round {entry.get('round')}) was carried out in no row")
    return violations


def archive_was_reported(rows: Sequence[Mapping[str, Any]], archive: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every architecture in the scheduler's Pareto archive was reported by its trial, in a row or
    among a row's pruning snapshots."""
    reported = set()
    for row in rows:
        reported.add((row.get("trial_id"), row.get("genome_hash")))
        reported.update((row.get("trial_id"), s.get("genome_hash")) for s in decode(row, "snapshots")
                        if isinstance(s, Mapping))
    return [f"archive: {entry['key']} (trial {entry['payload'].get('trial_id')}, round "
            f"{entry['payload'].get('round')}) was reported by no row of its trial"
            for entry in archive if (entry["payload"].get("trial_id"), entry["key"]) not in reported]


def rounds_are_covered(rows: Sequence[Mapping[str, Any]], rounds: int | None, population: int | None) -> list[str]:
    """In the order reported, each member's rounds follow on from its previous row, or go back (a redone
    round, marked ``redone``), or start where a clone's donor stood (marked ``cloned_from``); none is
    skipped, and every member reaches the last round."""
    violations, last = [], {}
    for row in rows:
        trial, iteration = row.get("trial_id"), row.get("training_iteration")
        previous = last.get(trial, 0)
        if not isinstance(iteration, int):
            violations.append(f"rows: trial {trial} reported a row without a round")
            continue
        if not row.get("cloned_from") and iteration > previous + 1:
            violations.append(f"rows: trial {trial} has no row for round(s) {previous + 1}-{iteration - 1}")
        last[trial] = iteration
    if population is not None and len(last) != population:
        violations.append(f"rows: {len(last)} of the {population} members reported")
    if rounds is not None:
        violations += [f"rows: trial {trial} stops at round {iteration} of {rounds}"
                       for trial, iteration in last.items() if iteration != rounds]
    return violations


def tables_match(run_dir: Path, rows: Sequence[Mapping[str, Any]], genealogy: Sequence[Mapping[str, Any]]) -> list[str]:
    """trials.parquet holds every row of rows.jsonl with the same marks, genealogy.parquet every exploit
    of the scheduler's state (both written when the search ends, so a run still going has neither)."""
    violations = []
    for name in (TRIALS_FILE, GENEALOGY_FILE):
        if not (run_dir / name).is_file():
            violations.append(f"{name} is missing: the search has not written its results (--resume finishes it)")
    if violations:
        return violations
    mark = ("trial_id", "training_iteration", "redone", "cloned_from")
    table = pq.read_table(run_dir / TRIALS_FILE)
    if not set(mark) <= set(table.column_names):
        return [f"{TRIALS_FILE} has no redone or cloned_from column (written before they existed?)"]
    written = Counter(tuple(row[k] for k in mark) for row in table.select(list(mark)).to_pylist())
    recorded = Counter(tuple(row.get(k) for k in mark) for row in rows)
    if written != recorded:
        violations.append(f"{TRIALS_FILE} does not match rows.jsonl: {sum((recorded - written).values())} row(s) "
                          f"missing, {sum((written - recorded).values())} not recorded there")
    written = Counter(pq.read_table(run_dir / GENEALOGY_FILE, columns=["mutation_id"]).column(0).to_pylist())
    if written != Counter(entry["mutation"]["id"] for entry in genealogy):
        violations.append(f"{GENEALOGY_FILE} does not hold the scheduler state's {len(genealogy)} exploits "
                          f"(it holds {sum(written.values())})")
    return violations


def latest_checkpoints(run_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Each member's newest checkpoint named in Ray's newest snapshot (the one ``--resume`` restores
    from), as a path in ``run_dir``; and the violations met reading it."""
    snapshots = sorted(run_dir.glob(RAY_SNAPSHOTS))
    if not snapshots:
        return {}, [f"no Ray snapshot ({RAY_SNAPSHOTS}) in {run_dir}"]
    try:
        state = json.loads(snapshots[-1].read_text())
    except (OSError, ValueError):
        return {}, [f"Ray's snapshot {snapshots[-1].name} is cut short (--resume puts back its last good copy)"]
    checkpoints = {}
    for trial_state, metadata in state.get("trial_data", []):
        trial = json.loads(trial_state)["trial_id"]
        manager = json.loads(metadata).get("checkpoint_manager", {})
        named = [Path(s) for s in _pickled_strings(bytes.fromhex(manager.get("value", ""))) if CHECKPOINT.search(s)]
        if named:
            # Ray lists a member's checkpoints oldest first; the folder may have moved since.
            checkpoints[trial] = run_dir / named[-1].parent.name / named[-1].name
    return checkpoints, []


def _pickled_strings(data: bytes) -> list[str]:
    """The strings in a pickle, in order, read without building any object (nothing in it runs)."""
    try:
        return [arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)]
    except Exception:  # pickletools raises ValueError and others on a damaged stream
        return []
