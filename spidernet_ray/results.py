"""Results of a search run: tables, the Pareto front, a plot and a summary, beside Ray's own files.

After ``tuner.fit()`` the launcher calls ``write_results(experiment_dir, objectives, budgets)`` on
Ray's experiment directory ``<storage>/<name>/``. It holds one sub-directory per trial, the
launcher's ``rows.jsonl`` (one JSON object per reported round of any trial) and the scheduler's
``scheduler/state.json``. This module reads them (no Ray import) and writes, in the same directory:

    trials.parquet     every reported row of every trial
    pareto.parquet     the Pareto front of feasible architectures (one row per architecture)
    genealogy.parquet  who cloned whom, with which mutation (from the scheduler state)
    pareto.png         val accuracy against latency and against peak memory, the front highlighted
    summary.md         counts, the best member and the front as a markdown table

Every file is written to a temporary name and moved into place, so a crash never leaves half a file.
All ranking goes through ``spidernet_ray.pareto``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spidernet_ray.record import REPORT_TYPES, decode
from spidernet_ray.rundir import (
    FRONT_CHECK_FILE,
    GENEALOGY_FILE,
    LEGACY_STATE_FILE,
    PARETO_FILE,
    PLOT_FILE,
    ROWS_FILE,
    STATE_FILE,
    SUMMARY_FILE,
    TRIALS_FILE,
    atomic_write,
    atomic_write_text,
    is_finite_number,
)
from spidernet_ray.pareto import (
    Objective,
    budget_violation,
    hypervolume,
    nondominated_sort,
    objective_matrix,
    parse_objectives,
    rank_population,
)

logger = logging.getLogger(__name__)

# Scalar hyperparameters kept from each row's nested ``config`` (as ``config_<key>`` columns).
CONFIG_KEYS = ("lr", "weight_decay", "drop_path", "seed")
# What a front entry keeps of its row; the objective metrics are added after val_accuracy.
FRONT_KEYS = (
    "trial_id", "trial_dir", "training_iteration", "val_accuracy", "latency_ms", "peak_memory_mb",
    "params", "flops", "ops_alive", "estimated", "genome_hash", "genome",
)
MEASURED_KEYS = ("measured_latency_ms", "measured_peak_memory_mb")  # joined from FRONT_CHECK_FILE

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()
# Column types of the keys we know. A column whose values do not fit its declared type, and any
# unknown column, gets a type inferred from its values instead (strings as the last resort).
ROW_TYPES: dict[str, pa.DataType] = {
    "trial_id": _S, "trial_dir": _S, "training_iteration": _I, **REPORT_TYPES,
    # derived from the order rows were reported in (see mark_history)
    "redone": _B, "cloned_from": _S,
    "config_lr": _F, "config_weight_decay": _F, "config_drop_path": _F, "config_seed": _I,
}
RAY_TYPES: dict[str, pa.DataType] = {
    "time_total_s": _F, "time_this_iter_s": _F, "time_since_restore": _F,
    "iterations_since_restore": _I, "timestamp": _I, "date": _S, "done": _B, "pid": _I,
    "hostname": _S, "node_ip": _S, "experiment_tag": _S, "checkpoint_dir_name": _S,
}
GENEALOGY_TYPES: dict[str, pa.DataType] = {
    "time": _F, "round": _I, "child": _S, "donor": _S, "donor_genome_hash": _S,
    "mutation_id": _S, "mutation_kind": _S, "lr": _F, "weight_decay": _F, "drop_path": _F, "undone": _B,
}
COLUMN_TYPES = {**ROW_TYPES, **RAY_TYPES, **GENEALOGY_TYPES}


@dataclass
class Summary:
    """What ``write_results`` wrote and found."""

    run_name: str
    paths: dict[str, Path]  # "trials", "pareto", "genealogy", "plot", "summary" -> file
    n_rows: int
    n_trials: int  # trial directories, reporting or not
    n_rounds: int  # highest training_iteration reported
    n_exploits: int  # genealogy entries: clones of a donor into a weaker trial
    n_refused_splits: int  # splits not applied because they would break a budget
    front: list[dict[str, Any]] = field(default_factory=list)  # best val accuracy first
    best: dict[str, Any] | None = None  # the front member with the best val accuracy
    table_markdown: str = ""
    warning: str | None = None  # chance_warning of the best member, when it is near chance

    def __repr__(self) -> str:
        return (f"Summary({self.run_name!r}: {self.n_rows} rows from {self.n_trials} trials, "
                f"{len(self.front)} on the front)")


# -- chance level -------------------------------------------------------------------------------
CHANCE_MARGIN = 0.05  # a best val accuracy this close to 1/num_classes is a search that learnt nothing yet


def num_classes_of(rows: Iterable[Mapping[str, Any]]) -> int | None:
    """The class count of the networks in ``rows`` (from the first genome that reads), None without one."""
    for row in rows:
        genome = row.get("genome")
        try:
            return int((json.loads(genome) if isinstance(genome, str) else genome)["num_classes"])
        except (TypeError, ValueError, KeyError):
            continue
    return None


def chance_warning(best_val_accuracy: float | None, num_classes: int | None) -> str | None:
    """A one-line warning when the best validation accuracy is within CHANCE_MARGIN of chance, else None.

    A front of such members ranks noise: every row looks Pareto-optimal because accuracy barely differs.
    """
    if not is_finite_number(best_val_accuracy) or not num_classes:
        return None
    chance = 1.0 / num_classes
    if best_val_accuracy > chance + CHANCE_MARGIN:
        return None
    return (f"warning: the best val accuracy {best_val_accuracy:.1%} is within {CHANCE_MARGIN * 100:.0f} points "
            f"of chance ({chance:.1%} for {num_classes} classes): the members have likely trained too few "
            "steps for the data size; give them more (--rounds, --epochs-per-round) before trusting this front")


# -- reading ------------------------------------------------------------------------------------
def trial_dirs(experiment_dir: str | os.PathLike) -> list[Path]:
    """Ray's trial directories in the experiment directory (those with params.json)."""
    experiment_dir = Path(experiment_dir)
    return sorted(path for path in experiment_dir.iterdir() if path.is_dir() and (path / "params.json").exists())


def _read_result_file(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; undecodable lines (a driver that died mid-write) skipped."""
    rows = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)  # Python's json reads NaN and Infinity tokens
            except json.JSONDecodeError:
                logger.warning("skipping undecodable line %d of %s", number, path)
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _flatten(row: Mapping[str, Any], trial_dir: str) -> dict[str, Any]:
    """One table row: the nested config reduced to its config_* scalars, other nesting as JSON text."""
    flat: dict[str, Any] = {"trial_id": row.get("trial_id", trial_dir), "trial_dir": trial_dir}
    for key, value in row.items():
        if key == "config":
            continue
        flat[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
    config = row.get("config")
    if isinstance(config, Mapping):
        for key in CONFIG_KEYS:
            value = config.get(key)
            if isinstance(value, (bool, int, float, str)):
                flat[f"config_{key}"] = value
    return flat


def read_reported_rows(experiment_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of rows.jsonl as the members reported them (nested config kept), in the order reported,
    each marked by ``mark_history``."""
    path = Path(experiment_dir) / ROWS_FILE
    rows = _read_result_file(path) if path.exists() else []
    mark_history(rows)
    return rows


def mutation_id(row: Mapping[str, Any]) -> str | None:
    """The id of the mutation instruction the row's member carried out before the round, if it did."""
    return decode(row, "mutation").get("id")


def mark_history(rows: Sequence[dict[str, Any]]) -> None:
    """Mark each row, given in the order reported, with what a reader of the table cannot see otherwise.

    ``cloned_from``: the donor the member was cloned from just before this round. PBT gives a clone
    its donor's round count, so a member's rounds jump ahead or back at a clone.
    ``redone``: the member reported this round already, since its last clone: it went back to an
    earlier checkpoint (a resumed driver, a restarted worker, a checkpoint that failed to load). A clone
    carried out again after such a restart is redone too.
    """
    furthest: dict[Any, int] = {}  # trial -> highest round reported since its last clone
    carried: dict[Any, set] = {}  # trial -> mutation ids it carried out
    for row in rows:
        trial, iteration = row.get("trial_id"), row.get("training_iteration")
        iteration = iteration if is_finite_number(iteration) else 0
        mutation = mutation_id(row)
        if mutation:
            row["cloned_from"] = row.get("parent_trial") or ""
            row["redone"] = mutation in carried.setdefault(trial, set())
            carried[trial].add(mutation)
            furthest[trial] = iteration
        else:
            row["cloned_from"] = ""
            row["redone"] = iteration <= furthest.get(trial, 0)
            furthest[trial] = max(iteration, furthest.get(trial, 0))


def read_rows(experiment_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every reported row of every trial (from rows.jsonl), flat, sorted by (trial_id, training_iteration).

    Each row gains ``trial_dir`` (the trial's directory name, where Ray keeps its checkpoints) and
    ``redone`` and ``cloned_from`` (see ``mark_history``), and loses the nested ``config``, of which
    lr, weight_decay, drop_path and seed are kept as ``config_*`` columns.
    """
    experiment_dir = Path(experiment_dir)
    if not (experiment_dir / ROWS_FILE).exists():
        return []
    dirs = [d.name for d in trial_dirs(experiment_dir)]
    keyed = []
    for line_index, row in enumerate(read_reported_rows(experiment_dir)):
        trial_dir = next((name for name in dirs if f"_{row.get('trial_id')}_" in name), "")
        flat = _flatten(row, trial_dir)
        iteration = flat.get("training_iteration")
        iteration = iteration if isinstance(iteration, (int, float)) else math.inf
        # A clone restores its donor's iteration count, so file order breaks ties.
        keyed.append(((str(flat["trial_id"]), iteration, line_index), flat))
    keyed.sort(key=lambda item: item[0])
    return [row for _, row in keyed]


def read_state(experiment_dir: str | os.PathLike) -> dict[str, Any]:
    """The scheduler's saved state, or an empty one (no genealogy) when the file is missing."""
    for name in (STATE_FILE, LEGACY_STATE_FILE):
        path = Path(experiment_dir) / name
        if path.exists():
            return json.loads(path.read_text())
    return {"genealogy": [], "archive": None, "scores": {}}


def read_genealogy(experiment_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The scheduler's genealogy, one flat dict per exploit (the GENEALOGY_TYPES keys)."""
    entries = []
    for entry in read_state(experiment_dir).get("genealogy") or []:
        mutation = entry.get("mutation")
        mutation = mutation if isinstance(mutation, Mapping) else {}
        flat = {key: entry.get(key) for key in GENEALOGY_TYPES}
        flat["mutation_id"] = mutation.get("id")
        flat["mutation_kind"] = mutation.get("kind")
        flat["undone"] = bool(entry.get("undone"))
        entries.append(flat)
    return entries


# -- the front ----------------------------------------------------------------------------------
def _eligible(rows: Iterable[Mapping[str, Any]], objectives: Sequence[Objective],
              budgets: Mapping[str, float] | None) -> list[Mapping[str, Any]]:
    """Rows of feasible, non-diverged architectures whose objective metrics were all measured.

    Feasibility is recomputed from ``budgets`` (the row's own ``feasible`` flag is not trusted, so
    the same run can be read under other budgets); no budgets means every row is within budget.
    """
    return [
        row for row in rows
        if not row.get("diverged")
        and budget_violation(row, budgets) == 0
        and all(is_finite_number(row.get(objective.metric)) for objective in objectives)
    ]


def _sort_by_accuracy(entries: list[dict[str, Any]], objectives: Sequence[Objective]) -> list[dict[str, Any]]:
    """Best val accuracy first; ties in the order of the objectives (each in its own direction)."""
    values = objective_matrix(entries, objectives)
    accuracy = [-float(entry["val_accuracy"]) if is_finite_number(entry.get("val_accuracy")) else math.inf
                for entry in entries]
    # lexsort's last key is the primary one.
    order = np.lexsort((*values.T[::-1], np.asarray(accuracy, dtype=float)))
    return [entries[index] for index in order]


def snapshot_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per architecture snapshot (gradual pruning) reported in ``rows``' ``snapshots`` JSON,
    carrying its trial and round, so snapshots compete for the front like the rounds' own rows."""
    found = []
    for row in rows:
        for snapshot in decode(row, "snapshots"):
            if isinstance(snapshot, dict):
                found.append({**snapshot, "trial_id": row.get("trial_id"), "trial_dir": row.get("trial_dir"),
                              "training_iteration": row.get("training_iteration"), "snapshot": True})
    return found


def pareto_front(
    rows: Sequence[Mapping[str, Any]],
    objectives: Iterable[str | Objective],
    budgets: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The non-dominated feasible architectures seen in any round of any trial.

    Rows that are diverged, over a budget (``budget_violation(row, budgets) > 0``) or lack a finite
    objective metric are left out. Each architecture (``genome_hash``) is represented by its best
    row under ``rank_population`` over all remaining rows; the front is the first non-dominated front
    of those representatives. Entries keep FRONT_KEYS plus the objective metrics, best val accuracy
    first.
    """
    objectives = parse_objectives(objectives)
    eligible = _eligible(rows, objectives, budgets)
    if not eligible:
        return []
    representatives: dict[Any, int] = {}
    for index in rank_population(objective_matrix(eligible, objectives)):
        row = eligible[index]
        key = row.get("genome_hash") or ("no hash", row.get("trial_id"), row.get("training_iteration"), index)
        representatives.setdefault(key, int(index))
    kept = [eligible[index] for index in sorted(representatives.values())]
    first_front = nondominated_sort(objective_matrix(kept, objectives))[0]
    keys = list(dict.fromkeys((*FRONT_KEYS[:4], *(o.metric for o in objectives), *FRONT_KEYS[4:])))
    front = [{key: kept[index].get(key) for key in keys} for index in first_front]
    return _sort_by_accuracy(front, objectives)


def hypervolume_of(
    rows_or_front: Sequence[Mapping[str, Any]],
    objectives: Iterable[str | Objective] = ("max:val_accuracy", "min:latency_ms"),
    *,
    reference: Sequence[float],
    budgets: Mapping[str, float] | None = None,
) -> float:
    """Hypervolume dominated by the feasible rows, in "error" units, bounded by ``reference``.

    Convention: every objective is turned into a cost to minimise; a "max" objective (a fraction
    such as val_accuracy) becomes its complement ``1 - value`` (val error), a "min" objective stays
    as it is. ``reference`` is given in those units, one value per objective: with the default
    objectives ``reference=(1.0, 20.0)`` means "val error 100 %, latency 20 ms", and the result is
    in error x milliseconds. Diverged rows, rows over ``budgets`` and rows with a missing metric add
    nothing, nor does a point not strictly better than the reference in every coordinate. Keep the
    reference fixed to compare runs.
    """
    objectives = parse_objectives(objectives)
    if len(reference) != len(objectives):
        raise ValueError(f"reference needs one value per objective ({len(objectives)}), got {len(reference)}")
    eligible = _eligible(rows_or_front, objectives, budgets)
    costs = objective_matrix(eligible, objectives).reshape(len(eligible), len(objectives))
    for column, objective in enumerate(objectives):
        if objective.mode == "max":
            costs[:, column] += 1.0  # objective_matrix holds -value; the cost is 1 - value
    return hypervolume(costs, reference)


# -- markdown -----------------------------------------------------------------------------------
FRONT_TABLE_HEADER = (
    "| rank | trial | round | val acc (%) | latency (ms) | peak mem (MB) | params | FLOPs | ops | genome hash |\n"
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


def format_number(value: Any, spec: str, scale: float = 1.0) -> str:
    """A finite number formatted with ``spec`` (a "d" spec rounds to an integer), else "n/a"."""
    if not is_finite_number(value):
        return "n/a"
    value = value * scale
    return format(round(value) if spec.endswith("d") else value, spec)


def _si(value: Any) -> str:
    """12345678 -> '12.35 M' (FLOPs read best in engineering units)."""
    if not is_finite_number(value):
        return "n/a"
    for factor, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {unit}"
    return f"{value:.0f}"


# -- estimates against measurement ---------------------------------------------------------------
def front_check(estimated: Sequence[Mapping[str, Any]], measured: Sequence[Mapping[str, Any]],
                **about: Any) -> dict[str, Any]:
    """The front's networks, each estimated (a row of the search) and measured (``hardware.measure``,
    same order), with how well the estimates rank and size them (``agreement``), per metric."""
    architectures = [
        {"genome_hash": e["genome_hash"], "latency_ms": e["latency_ms"], "measured_latency_ms": m["latency_ms"],
         "measured_latency_spread_ms": m["latency_spread_ms"], "peak_memory_mb": e["peak_memory_mb"],
         "measured_peak_memory_mb": m["peak_memory_mb"], "memory_method": m["memory_method"]}
        for e, m in zip(estimated, measured)
    ]
    check = {**about, "architectures": architectures}
    for metric in ("latency_ms", "peak_memory_mb"):
        check[metric] = agreement([a[metric] for a in architectures], [a[f"measured_{metric}"] for a in architectures])
    return check


def agreement(estimates: Sequence[float], measured: Sequence[float]) -> dict[str, float | None]:
    """How well ``estimates`` rank and size what was ``measured`` (same order): Kendall tau, and the median
    and largest relative error of the estimate (None where there are too few values)."""
    from scipy.stats import kendalltau

    guess, truth = np.asarray(estimates, float), np.asarray(measured, float)
    errors = np.abs(guess / truth - 1)
    tau = kendalltau(guess, truth).statistic if len(truth) > 1 else math.nan
    return {"kendall_tau": None if math.isnan(tau) else float(tau),
            "median_error": float(np.median(errors)) if len(errors) else None,
            "largest_error": float(np.max(errors)) if len(errors) else None}


def read_front_check(experiment_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(experiment_dir) / FRONT_CHECK_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def format_front_check(check: Mapping[str, Any]) -> str:
    """The front's estimated figures against their measurement, as markdown."""
    lines = [
        f"## Estimated against measured ({len(check['architectures'])} front architectures, measured after the "
        f"search on {check.get('device', '?')}, {check.get('threads', '?')} thread(s))",
        "",
        "The search ranks on latency and memory estimated from the run's cost model (per-op tables measured "
        "once); the front's networks were then measured whole, with the device to themselves.",
        "",
        "| genome | latency est. (ms) | latency measured (ms) | peak mem est. (MB) | peak mem measured (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for a in check["architectures"]:
        lines.append(f"| `{a['genome_hash']}` | {format_number(a['latency_ms'], '.3f')} | "
                     f"{format_number(a['measured_latency_ms'], '.3f')} | {format_number(a['peak_memory_mb'], '.1f')} | "
                     f"{format_number(a['measured_peak_memory_mb'], '.1f')} |")
    lines.append("")
    for metric, name in (("latency_ms", "latency"), ("peak_memory_mb", "peak memory")):
        m = check[metric]
        lines.append(f"- {name}: Kendall tau {format_number(m['kendall_tau'], '+.2f')}, relative error median "
                     f"{format_number(m['median_error'], '.1%')}, largest {format_number(m['largest_error'], '.1%')}")
    return "\n".join(lines)


def format_front_table(front: Sequence[Mapping[str, Any]]) -> str:
    """The front as a markdown table (one line per architecture, in the given order)."""
    if not front:
        return "(empty Pareto front: no feasible, non-diverged architecture was reported)"
    lines = [FRONT_TABLE_HEADER]
    for rank, entry in enumerate(front, start=1):
        cells = [
            str(rank),
            f"{entry.get('trial_id', '')}",
            format_number(entry.get("training_iteration"), "d"),
            format_number(entry.get("val_accuracy"), ".2f", 100.0),
            format_number(entry.get("latency_ms"), ".3f"),
            format_number(entry.get("peak_memory_mb"), ".1f"),
            format_number(entry.get("params"), ",d"),
            _si(entry.get("flops")),
            format_number(entry.get("ops_alive"), "d"),
            f"`{entry.get('genome_hash') or ''}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary_markdown(summary: Summary, rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective],
                      budgets: Mapping[str, float] | None, check: Mapping[str, Any] | None = None) -> str:
    reporting = len({row["trial_id"] for row in rows})
    diverged = len({row["trial_id"] for row in rows if row.get("diverged")})
    splits = sum(1 for row in rows if row.get("split_applied") is True)
    architectures = len({row.get("genome_hash") for row in rows if row.get("genome_hash")})
    lines = [
        f"# Search results: {summary.run_name}",
        "",
        f"- trials: {summary.n_trials} ({reporting} reported, {summary.n_trials - reporting} never reported, "
        f"{diverged} diverged at some round)",
        f"- rounds: {summary.n_rounds} (highest training_iteration reported)",
        f"- rows: {summary.n_rows} ({architectures} distinct architectures)",
        f"- exploits: {summary.n_exploits} (clones of a stronger member, each with a mutation)",
        f"- splits applied: {splits}; refused splits (over budget): {summary.n_refused_splits}",
        f"- objectives: {', '.join(str(objective) for objective in objectives)}",
        "- budgets: " + (", ".join(f"{metric} <= {limit:g}" for metric, limit in budgets.items())
                         if budgets else "none"),
        "",
    ]
    if summary.warning:
        lines += [f"> **{summary.warning}**", ""]
    lines += [
        "## Best member",
        "",
    ]
    best = summary.best
    if best is None:
        lines.append("No feasible, non-diverged architecture was reported.")
    else:
        lines.append(
            f"Trial `{best.get('trial_id')}`, round {format_number(best.get('training_iteration'), 'd')}: "
            f"val acc {format_number(best.get('val_accuracy'), '.2f', 100.0)} %, "
            f"latency {format_number(best.get('latency_ms'), '.3f')} ms, "
            f"peak mem {format_number(best.get('peak_memory_mb'), '.1f')} MB, "
            f"{format_number(best.get('params'), ',d')} params, {_si(best.get('flops'))} FLOPs, "
            f"{format_number(best.get('ops_alive'), 'd')} ops, genome `{best.get('genome_hash')}`."
        )
    lines += [
        "",
        f"## Pareto front ({len(summary.front)} architectures, best val accuracy first)",
        "",
        summary.table_markdown,
        "",
        f"![Pareto front]({PLOT_FILE})",
        "",
        *([format_front_check(check), ""] if check else []),
        f"Files: `{TRIALS_FILE}` (every row), `{PARETO_FILE}` (the front, with genome JSON), "
        f"`{GENEALOGY_FILE}` (exploits and mutations).",
        "",
    ]
    return "\n".join(lines)


# -- tables -------------------------------------------------------------------------------------
def _converted(values: Sequence[Any], arrow_type: pa.DataType) -> list[Any]:
    """Values as Python objects of ``arrow_type``; TypeError when one does not fit."""
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(None)
        elif pa.types.is_string(arrow_type):
            out.append(value if isinstance(value, str) else json.dumps(value))
        elif isinstance(value, bool) or isinstance(value, str):
            if not pa.types.is_boolean(arrow_type) or isinstance(value, str):
                raise TypeError(f"{value!r} is not {arrow_type}")
            out.append(value)
        elif pa.types.is_boolean(arrow_type):
            raise TypeError(f"{value!r} is not {arrow_type}")
        elif pa.types.is_integer(arrow_type):
            if isinstance(value, float) and not math.isfinite(value):
                out.append(None)  # an unmeasured count is missing, not a number
            elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
                out.append(int(value))
            else:
                raise TypeError(f"{value!r} is not {arrow_type}")
        elif isinstance(value, (int, float)):
            out.append(float(value))
        else:
            raise TypeError(f"{value!r} is not {arrow_type}")
    return out


def _inferred_type(values: Sequence[Any]) -> pa.DataType:
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, bool) for value in present):
        return _B
    if present and all(isinstance(value, int) and not isinstance(value, bool) for value in present):
        return _I
    if present and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in present):
        return _F
    return _S


def _column(name: str, values: Sequence[Any], types: Mapping[str, pa.DataType]) -> pa.Array:
    """The column as its declared type when every value fits, else as a type inferred from them."""
    declared = types.get(name, COLUMN_TYPES.get(name))
    candidates = [declared] if declared is not None else []
    if any(value is not None for value in values):
        candidates.append(_inferred_type(values))
    candidates.append(_S)  # always fits: anything non-string is written as JSON text
    for arrow_type in candidates:
        try:
            return pa.array(_converted(values, arrow_type), type=arrow_type)
        except (TypeError, pa.ArrowException):
            continue
    raise AssertionError("a string column always fits")  # pragma: no cover


def to_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = (),
             types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """Rows -> an Arrow table: ``columns`` first (kept even when no row has them), then the other
    keys in order of first appearance. Known keys get COLUMN_TYPES (``types`` overrides)."""
    names = list(dict.fromkeys([*columns, *(key for row in rows for key in row)]))
    types = types or {}
    return pa.table({name: _column(name, [row.get(name) for row in rows], types) for name in names})


# -- writing ------------------------------------------------------------------------------------
def _write_parquet(path: Path, table: pa.Table) -> Path:
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


_TRIALS_LEADING = ("trial_id", "trial_dir", "training_iteration")


def write_results(
    experiment_dir: str | os.PathLike,
    objectives: Iterable[str | Objective],
    budgets: Mapping[str, float] | None = None,
) -> Summary:
    """Read the run in ``experiment_dir`` and write the five result files beside Ray's."""
    experiment_dir = Path(experiment_dir)
    objectives = parse_objectives(objectives)
    rows = read_rows(experiment_dir)
    front = pareto_front(rows + snapshot_rows(rows), objectives, budgets)
    check = read_front_check(experiment_dir)
    if check:
        measured = {a["genome_hash"]: a for a in check["architectures"]}
        for entry in front:
            entry.update({key: measured.get(entry["genome_hash"], {}).get(key) for key in MEASURED_KEYS})
    genealogy = read_genealogy(experiment_dir)
    iterations = [row["training_iteration"] for row in rows if is_finite_number(row.get("training_iteration"))]
    summary = Summary(
        run_name=experiment_dir.name,
        paths={},
        n_rows=len(rows),
        n_trials=len(trial_dirs(experiment_dir)),
        n_rounds=int(max(iterations, default=0)),
        n_exploits=len(genealogy),
        n_refused_splits=sum(int(row["split_refused_budget"]) for row in rows
                             if is_finite_number(row.get("split_refused_budget"))),
        front=front,
        best=front[0] if front else None,
        table_markdown=format_front_table(front),
    )
    best_accuracy = max((r["val_accuracy"] for r in rows if is_finite_number(r.get("val_accuracy"))), default=None)
    summary.warning = chance_warning(best_accuracy, num_classes_of(rows))

    trial_columns = _TRIALS_LEADING if rows else tuple(ROW_TYPES)  # typed even when empty
    front_keys = list(dict.fromkeys((*FRONT_KEYS, *(objective.metric for objective in objectives),
                                     *(MEASURED_KEYS if check else ()))))
    front_types = {objective.metric: _F for objective in objectives if objective.metric not in COLUMN_TYPES}
    paths = summary.paths
    paths["trials"] = _write_parquet(experiment_dir / TRIALS_FILE, to_table(rows, trial_columns))
    paths["pareto"] = _write_parquet(experiment_dir / PARETO_FILE, to_table(front, front_keys, front_types))
    paths["genealogy"] = _write_parquet(experiment_dir / GENEALOGY_FILE, to_table(genealogy, tuple(GENEALOGY_TYPES)))
    paths["plot"] = atomic_write(
        experiment_dir / PLOT_FILE, lambda tmp: plot_front(rows, front, tmp, title=summary.run_name, budgets=budgets)
    )
    paths["summary"] = atomic_write_text(experiment_dir / SUMMARY_FILE,
                                         _summary_markdown(summary, rows, objectives, budgets, check))
    return summary


# -- plot ---------------------------------------------------------------------------------------
PANELS = (  # metric, axis label
    ("latency_ms", "inference latency (ms)"),
    ("peak_memory_mb", "peak training memory (MB)"),
)


def _xy(rows: Iterable[Mapping[str, Any]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(metric, val accuracy in %) of the rows where both are finite."""
    pairs = [(row[metric], 100.0 * row["val_accuracy"]) for row in rows
             if is_finite_number(row.get(metric)) and is_finite_number(row.get("val_accuracy"))]
    array = np.asarray(pairs, dtype=float).reshape(-1, 2)
    return array[:, 0], array[:, 1]


def _wide(*values) -> bool:
    """Whether costs span more than 10x (then drawn on a log scale)."""
    positive = [v for group in values for v in group if v > 0]
    return bool(positive) and max(positive) / min(positive) > 10


def _rank_labels(axis, front: Sequence[Mapping[str, Any]], metric: str, log: bool) -> None:
    """Each front member's rank beside its point; members drawn on (nearly) the same spot share one
    label ("2,5") instead of printing over each other."""
    points = [(rank, float(e[metric]), 100.0 * float(e["val_accuracy"])) for rank, e in enumerate(front, start=1)
              if is_finite_number(e.get(metric)) and is_finite_number(e.get("val_accuracy"))]
    if not points:
        return
    xs = [math.log10(x) if log and x > 0 else x for _, x, _ in points]
    ys = [y for _, _, y in points]
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: list[list[int]] = []
    for i in range(len(points)):  # one group per spot: within 3 % of the span on both axes
        for group in groups:
            j = group[0]
            if abs(xs[i] - xs[j]) < 0.03 * x_span and abs(ys[i] - ys[j]) < 0.03 * y_span:
                group.append(i)
                break
        else:
            groups.append([i])
    for group in groups:
        _, x, y = points[group[0]]
        axis.annotate(",".join(str(points[i][0]) for i in group), (x, y), fontsize=8, xytext=(5, 4),
                      textcoords="offset points", color="tab:blue")


def plot_front(
    rows: Sequence[Mapping[str, Any]],
    front: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    budgets: Mapping[str, float] | None = None,
    panels: Sequence[tuple[str, str]] = PANELS,
) -> Path:
    """One panel per (metric, label) of ``panels``: val accuracy against that cost.

    Every reported row is a light point (rows over budget are light crosses, diverged rows are left
    out); the front's members are highlighted, numbered by their rank, and joined by the step line of
    the best accuracy reachable at each cost. A budget on a panel's metric is drawn as a dashed
    vertical line; a cost spanning more than 10x is drawn on a log scale.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    budgets = dict(budgets or {})
    live = [row for row in rows if not row.get("diverged")]
    over = [row for row in live if budget_violation(row, budgets) > 0]
    within = [row for row in live if budget_violation(row, budgets) == 0]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 2, 5), sharey=True,
                                constrained_layout=True, squeeze=False)
    for axis, (metric, label) in zip(axes[0], panels):
        x, y = _xy(within, metric)
        axis.scatter(x, y, s=20, color="0.5", alpha=0.45, linewidths=0, label=f"reported rounds ({len(x)})")
        spread = list(x)
        x, y = _xy(over, metric)
        if len(x):
            axis.scatter(x, y, s=24, color="tab:red", alpha=0.5, marker="x", label=f"over budget ({len(x)})")
        x, y = _xy(front, metric)
        if len(x):
            # The step line joins only the points non-dominated on this panel's two axes: with a third
            # objective a front member may be here only by, say, a hair less memory in another panel.
            flat = [i for i in range(len(x)) if not any(x[j] <= x[i] and y[j] >= y[i] and (x[j], y[j]) != (x[i], y[i])
                                                         for j in range(len(x)))]
            order = sorted(flat, key=lambda i: x[i])
            axis.plot(x[order], y[order], drawstyle="steps-post", color="tab:blue", linewidth=1.8, zorder=3)
            axis.scatter(x, y, s=55, color="tab:blue", edgecolors="white", linewidths=0.8, zorder=4,
                         label=f"Pareto front ({len(x)})")
            _rank_labels(axis, front, metric, log=_wide(spread, x))
        if _wide(spread, x):
            axis.set_xscale("log")
        if metric in budgets:
            axis.axvline(budgets[metric], color="tab:red", linestyle="--", linewidth=1.2,
                         label=f"budget {budgets[metric]:g}")
        if not rows:
            axis.text(0.5, 0.5, "no reported rounds", transform=axis.transAxes, ha="center", va="center")
        axis.set_xlabel(label)
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best", fontsize=9)
    axes[0][0].set_ylabel("validation accuracy (%)")
    figure.suptitle(f"{title}: validation accuracy vs hardware cost (numbers: rank on the front)" if title else
                    "validation accuracy vs hardware cost (numbers: rank on the front)")
    path = Path(path)
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)
    return path
