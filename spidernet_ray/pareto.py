"""Multi-objective ranking in pure NumPy.

Non-dominated sorting with constraint domination, crowding distance, hypervolume and a persistent
Pareto archive. Every array of objective values here is in *minimisation form*: one row per member,
one column per objective, smaller is better (``objective_matrix`` negates "max" objectives).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

MODES = ("max", "min")


@dataclass(frozen=True)
class Objective:
    """One metric to optimise and its direction."""

    metric: str
    mode: Literal["max", "min"]

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("objective metric name must not be empty")
        if self.mode not in MODES:
            raise ValueError(f"objective {self.metric!r} has unknown mode {self.mode!r}; use 'max' or 'min'")

    def __str__(self) -> str:
        return f"{self.mode}:{self.metric}"


def parse_objective(spec: str | Objective) -> Objective:
    """Parse ``"max:val_accuracy"`` or ``"min:latency_ms"`` (an ``Objective`` passes through)."""
    if isinstance(spec, Objective):
        return spec
    mode, sep, metric = str(spec).partition(":")
    if not sep or not mode.strip() or not metric.strip():
        raise ValueError(f"objective {spec!r} must look like 'max:<metric>' or 'min:<metric>'")
    return Objective(metric=metric.strip(), mode=mode.strip())


def parse_objectives(specs: Iterable[str | Objective]) -> tuple[Objective, ...]:
    """Parse several objectives; at least one, each metric at most once."""
    objectives = tuple(parse_objective(spec) for spec in specs)
    if not objectives:
        raise ValueError("at least one objective is needed")
    metrics = [objective.metric for objective in objectives]
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"each metric may appear in only one objective, got {metrics}")
    return objectives


DEFAULT_OBJECTIVES = parse_objectives(["max:val_accuracy", "min:latency_ms"])


def _finite_value(metrics: Mapping[str, Any], metric: str) -> float | None:
    """The metric as a float, or None when it is missing, not a number, NaN or infinite."""
    try:
        value = float(metrics[metric])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def objective_matrix(
    results: Sequence[Mapping[str, Any]], objectives: Iterable[str | Objective] = DEFAULT_OBJECTIVES
) -> np.ndarray:
    """Metric dicts -> (n, m) matrix in minimisation form ("max" objectives negated).

    A missing or non-finite metric counts as the worst possible value: +inf after conversion.
    """
    objectives = parse_objectives(objectives)
    matrix = np.full((len(results), len(objectives)), np.inf)
    for row, metrics in enumerate(results):
        for column, objective in enumerate(objectives):
            value = _finite_value(metrics, objective.metric)
            if value is not None:
                matrix[row, column] = -value if objective.mode == "max" else value
    return matrix


def budget_violation(metrics: Mapping[str, Any], budgets: Mapping[str, float] | None) -> float:
    """Total relative excess over the budgets: sum of max(0, value / budget - 1).

    0.0 means feasible (within every budget, or no budgets). A budgeted metric that is missing or
    non-finite makes the violation +inf.
    """
    violation = 0.0
    for metric, budget in (budgets or {}).items():
        if not budget > 0:
            raise ValueError(f"budget for {metric!r} must be positive, got {budget!r}")
        value = _finite_value(metrics, metric)
        if value is None:
            return math.inf
        violation += max(0.0, value / budget - 1.0)
    return violation


def dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray | bool:
    """Pareto dominance in minimisation form: a <= b everywhere and a < b somewhere.

    Broadcasts over leading axes; the last axis holds the objectives.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.all(a <= b, axis=-1) & np.any(a < b, axis=-1)


def _checked(values: Any, violations: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (n, m) value matrix and its (n,) violations (default: all feasible)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be an (n, m) matrix, got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("values must not contain NaN (use +inf for a missing metric)")
    if violations is None:
        return values, np.zeros(len(values))
    violations = np.asarray(violations, dtype=float)
    if violations.shape != (len(values),):
        raise ValueError(f"violations must have shape ({len(values)},), got {violations.shape}")
    if not np.all(violations >= 0):
        raise ValueError("violations must be non-negative numbers")
    return values, violations


def _constrained_dominance(values: np.ndarray, violations: np.ndarray | None = None) -> np.ndarray:
    """(n, n) matrix whose [i, j] says member i constraint-dominates member j (Deb's rule).

    A feasible member (violation 0) dominates every infeasible one; of two infeasible members the
    smaller violation dominates; two feasible members compare by Pareto dominance.
    """
    values, violations = _checked(values, violations)
    # Broadcast pairs one objective at a time: ten times faster than reducing an (n, n, m) array.
    no_worse = np.ones((len(values), len(values)), dtype=bool)
    better = np.zeros_like(no_worse)
    for column in values.T:
        no_worse &= column[:, None] <= column[None, :]
        better |= column[:, None] < column[None, :]
    pareto = no_worse & better
    feasible = violations == 0
    both_feasible = feasible[:, None] & feasible[None, :]
    return np.where(both_feasible, pareto, violations[:, None] < violations[None, :])


def nondominated_sort(values: np.ndarray, violations: np.ndarray | None = None) -> list[np.ndarray]:
    """Fronts of member indices, best first, under constraint domination.

    Front 0 holds the members nobody dominates; front k those dominated only by earlier fronts.
    Indices inside a front are ascending.
    """
    dominance = _constrained_dominance(values, violations)
    dominator_count = dominance.sum(axis=0)
    remaining = np.ones(len(dominance), dtype=bool)
    fronts = []
    while remaining.any():
        front = np.flatnonzero(remaining & (dominator_count == 0))
        fronts.append(front)
        remaining[front] = False
        dominator_count -= dominance[front].sum(axis=0)
    return fronts


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of the members of one front (larger = more isolated).

    Per objective, the two extreme members get +inf and the others the gap between their
    neighbours divided by the range of the objective's finite values; the distance is the sum over
    objectives. Fronts of one or two members are all +inf; an objective on which all members are
    equal adds nothing. A gap reaching an infinite (missing) value is infinite; no NaN is produced.
    """
    values, _ = _checked(values, None)
    size = len(values)
    if size <= 2:
        return np.full(size, np.inf)
    distance = np.zeros(size)
    for column in values.T:
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        if ordered[0] == ordered[-1]:
            continue
        distance[order[[0, -1]]] = np.inf
        finite = ordered[np.isfinite(ordered)]
        value_range = finite[-1] - finite[0] if len(finite) else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            gaps = (ordered[2:] - ordered[:-2]) / value_range
        distance[order[1:-1]] += np.nan_to_num(gaps, nan=0.0, posinf=np.inf)
    return distance


def pareto_rank(values: np.ndarray, violations: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per member: (front index, crowding distance within its front)."""
    values, violations = _checked(values, violations)
    front_index = np.zeros(len(values), dtype=int)
    crowding = np.zeros(len(values))
    for rank, members in enumerate(nondominated_sort(values, violations)):
        front_index[members] = rank
        crowding[members] = crowding_distance(values[members])
    return front_index, crowding


def rank_population(
    values: np.ndarray, violations: np.ndarray | None = None, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Member indices best first: by front, then by crowding distance descending, then by a random draw
    from ``rng`` (without one, by index).

    Ties are common in small populations (every member of a front of two or three has an infinite
    crowding distance), so breaking them by index would make the first trial the usual donor.
    """
    front_index, crowding = pareto_rank(values, violations)
    tiebreak = rng.permutation(len(front_index)) if rng is not None else np.arange(len(front_index))
    return np.lexsort((tiebreak, -crowding, front_index))


def _checked_points(points: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate points (n, m) and a finite reference (m,); keep only points strictly inside it."""
    reference = np.asarray(reference, dtype=float)
    if reference.ndim != 1 or not np.all(np.isfinite(reference)):
        raise ValueError(f"reference must be a finite vector, got {reference!r}")
    points = np.asarray(points, dtype=float)
    if points.size == 0:
        return np.empty((0, len(reference))), reference
    if points.ndim != 2 or points.shape[1] != len(reference):
        raise ValueError(f"points must have shape (n, {len(reference)}), got {points.shape}")
    return points[np.all(points < reference, axis=1)], reference


def _area_2d(points: np.ndarray, reference: np.ndarray) -> float:
    """Area dominated by 2-D points that all lie strictly inside the reference."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    x, y = points[order, 0], points[order, 1]
    # Sweep along x: each point adds the strip between its y and the best y seen before it.
    best_y_before = np.minimum.accumulate(np.concatenate(([reference[1]], y[:-1])))
    return float(np.sum((reference[0] - x) * np.clip(best_y_before - y, 0.0, None)))


def _sliced_volume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume by slicing along the last objective (HSO); points lie inside reference."""
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    if points.shape[1] == 2:
        return _area_2d(points, reference)
    points = points[np.argsort(points[:, -1], kind="stable")]
    slab_tops = np.append(points[1:, -1], reference[-1])
    volume = 0.0
    for count, (bottom, top) in enumerate(zip(points[:, -1], slab_tops), start=1):
        if top > bottom:
            volume += (top - bottom) * _sliced_volume(points[:count, :-1], reference[:-1])
    return volume


def hypervolume_2d(points: Any, reference: Any) -> float:
    """Area dominated by 2-D minimisation points and bounded by the reference point.

    Points not strictly better than the reference in both coordinates add nothing.
    """
    points, reference = _checked_points(points, reference)
    if len(reference) != 2:
        raise ValueError(f"hypervolume_2d needs a 2-D reference, got {len(reference)} dimensions")
    return _area_2d(points, reference) if len(points) else 0.0


def hypervolume(points: Any, reference: Any) -> float:
    """Exact hypervolume of minimisation points in any dimension, bounded by the reference.

    Points not strictly better than the reference in every coordinate add nothing. Exponential in
    the number of objectives: meant for small fronts (m <= 4, n up to ~100). For "max" objectives
    convert the reference like the points, e.g. ``objective_matrix([reference_metrics])[0]``.
    """
    points, reference = _checked_points(points, reference)
    return _sliced_volume(points, reference)


class ParetoArchive:
    """The non-dominated set of every feasible entry added so far.

    Entries are keyed by a caller's id; only the objective metrics are kept (as finite floats;
    a non-finite value is dropped, which means the same: worst possible). Payloads must be
    JSON-serialisable for ``to_dict`` to be.
    """

    def __init__(self, objectives: Iterable[str | Objective] = DEFAULT_OBJECTIVES) -> None:
        self.objectives = parse_objectives(objectives)
        self._entries: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        objectives = ", ".join(str(objective) for objective in self.objectives)
        return f"ParetoArchive({len(self)} entries; {objectives})"

    def add(
        self,
        key: str,
        metrics: Mapping[str, Any],
        payload: dict[str, Any] | None = None,
        violation: float = 0.0,
    ) -> bool:
        """Offer an entry; True if it entered the front.

        An existing entry with the same key is replaced: its old metrics are forgotten even when
        the new entry is infeasible (violation != 0) or dominated, neither of which is archived.
        Entries the new one dominates are dropped.
        """
        self._entries.pop(key, None)
        if violation != 0:
            return False
        kept_metrics = {}
        for objective in self.objectives:
            value = _finite_value(metrics, objective.metric)
            if value is not None:
                kept_metrics[objective.metric] = value
        new_values = objective_matrix([kept_metrics], self.objectives)[0]
        archived_metrics = [entry["metrics"] for entry in self._entries.values()]
        archived_values = objective_matrix(archived_metrics, self.objectives)
        if np.any(dominates(archived_values, new_values)):
            return False
        for archived_key, is_dominated in zip(list(self._entries), dominates(new_values, archived_values)):
            if is_dominated:
                del self._entries[archived_key]
        self._entries[key] = {"key": key, "metrics": kept_metrics, "payload": copy.deepcopy(payload)}
        return True

    def front(self) -> list[dict[str, Any]]:
        """The archived entries (copies), oldest first: each {"key", "metrics", "payload"}."""
        return [copy.deepcopy(entry) for entry in self._entries.values()]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON state: objectives as "mode:metric" strings and the entries."""
        return {"objectives": [str(objective) for objective in self.objectives], "entries": self.front()}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ParetoArchive:
        """Rebuild an archive saved with ``to_dict``."""
        archive = cls(state["objectives"])
        for entry in state["entries"]:
            archive.add(entry["key"], entry["metrics"], entry.get("payload"))
        return archive
