"""What a member reports each round, and the scheduler's mutation instruction: one typed record each.

``MemberReport`` is built by every trainable (the search's and the baselines') and turned into the
flat result Tune carries (``to_result``): nested fields (the mutation a clone carried out, the
architecture snapshots of a round) travel as JSON text, and ``decode`` is the one place that reads
them back. The Arrow column types of ``trials.parquet`` (``REPORT_TYPES``), the metrics an objective
may name (``OBJECTIVE_METRICS``) and what the Pareto archive keeps of a row (``ARCHIVE_FIELDS``) are
derived from the record's fields.

``MutationInstruction`` is what the scheduler hands a clone in its config (``mutation``), as a dict
so that Tune can copy and log it.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, fields
from typing import Any

import pyarrow as pa

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()


def column(arrow_type: pa.DataType, default: Any = None, *, objective: bool = False, archive: bool = False,
           nested: bool = False):
    """A report field with its Arrow type; ``objective``: an objective may name it; ``archive``: the
    Pareto archive keeps it; ``nested``: a dict or list that travels as JSON text."""
    return dataclasses.field(default=default, metadata={"arrow": arrow_type, "objective": objective,
                                                        "archive": archive, "nested": nested})


@dataclass
class MemberReport:
    """One round of one member. Fields left None are not reported (the baselines have no supernet, and
    search-space extensions that are off add nothing)."""

    # Selection metrics
    val_accuracy: float = column(_F, objective=True)
    val_loss: float = column(_F, objective=True)
    train_loss: float = column(_F, objective=True)
    # Hardware (spidernet_ray.hardware.HardwareMetrics)
    latency_ms: float = column(_F, objective=True)
    latency_spread_ms: float = column(_F, archive=True)
    peak_memory_mb: float = column(_F, objective=True)
    memory_method: str = column(_S, archive=True)
    params: int = column(_I, objective=True, archive=True)
    flops: int = column(_I, objective=True, archive=True)
    batch_size: int = column(_I)
    latency_batch_size: int = column(_I)
    device: str = column(_S)
    estimated: bool = column(_B, archive=True)  # latency and memory estimated (costmodel), not measured
    # Wall and CPU seconds of training, validation and measurement
    train_seconds: float = column(_F)
    train_cpu_seconds: float = column(_F)
    eval_seconds: float = column(_F)
    eval_cpu_seconds: float = column(_F)
    measure_seconds: float = column(_F)
    measure_cpu_seconds: float = column(_F)
    # The architecture
    ops_alive: int = column(_I, objective=True, archive=True)
    ops_open: int | None = column(_I)
    ops_deleted: int | None = column(_I)
    genome: str = column(_S, archive=True)  # the discrete network's genome JSON
    supernet_genome: str | None = column(_S)
    genome_hash: str = column(_S, archive=True)
    # Budgets and health
    budget_violation: float = column(_F)
    feasible: bool = column(_B)
    diverged: bool = column(_B)
    reason: str = column(_S)
    # Placement and recovery
    gpus: int | None = column(_I)
    node_id: str | None = column(_S)
    checkpoint_fallback: str | None = column(_S)
    # The member's hyperparameters
    lr: float = column(_F)
    weight_decay: float = column(_F)
    drop_path: float = column(_F)
    pressure: float | None = column(_F)  # the member's gate-pressure strength (search only)
    # Supernet vs the network it stands for: seconds per training batch, measured and estimated
    train_step_ms: float | None = column(_F)
    discrete_step_ms: float | None = column(_F)
    # What the last exploit did to this member (search only)
    mutation: dict | None = column(_S, nested=True)
    parent_trial: str | None = column(_S)
    split_applied: bool | None = column(_B)
    split_refused_budget: int | None = column(_I)
    # Search-space extensions
    round_epochs: int | None = column(_I)
    channels_removed: int | None = column(_I)
    snapshots: list | None = column(_S, nested=True)

    def to_result(self) -> dict[str, Any]:
        """The flat dict a trainable's ``step`` returns: None fields left out, nested ones as JSON text
        ("" when empty)."""
        result = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.metadata["nested"]:
                value = json.dumps(value) if value else ""
            result[f.name] = value
        return result


NESTED_FIELDS = tuple(f.name for f in fields(MemberReport) if f.metadata["nested"])
REPORT_TYPES: dict[str, pa.DataType] = {f.name: f.metadata["arrow"] for f in fields(MemberReport)}
OBJECTIVE_METRICS = tuple(f.name for f in fields(MemberReport) if f.metadata["objective"])
ARCHIVE_FIELDS = tuple(f.name for f in fields(MemberReport) if f.metadata["archive"])


def decode(row: dict[str, Any], name: str) -> Any:
    """A nested field of a reported row (``mutation``: a dict, ``snapshots``: a list), whether it is
    still JSON text or already decoded; empty when absent or unreadable."""
    empty = {} if name == "mutation" else []
    value = row.get(name)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else empty
        except ValueError:
            return empty
    return value if isinstance(value, type(empty)) else empty


@dataclass(frozen=True)
class MutationInstruction:
    """What a clone does after restoring its donor: ``kind`` is a split, a macro mutation
    (``genome.MACRO_MUTATIONS``; a ``split`` lets the clone choose among the registered cell mutations)
    or a crossover with ``other`` (whose genome it carries, since the
    clone restores only the donor's checkpoint)."""

    donor: str
    kind: str = "split"
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    other: str = ""
    other_genome: str = ""
    front_latencies: tuple[float, ...] = ()  # latency_ms of the archive's front: the clone fills a gap
    donor_latency: float = 0.0  # the donor's last latency_ms, which scales the clone's cheap estimates

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MutationInstruction:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if "front_latencies" in values:
            values["front_latencies"] = tuple(float(v) for v in values["front_latencies"])
        return cls(**values)
