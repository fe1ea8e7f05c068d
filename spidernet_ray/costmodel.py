"""Measure once, estimate every round: a run's cost model of latency, peak training memory, params
and FLOPs.

Measuring a network's latency and training-step memory takes a few tenths of a second, and pruning
changes every member's network every round, so a search that measured every round paid that on
every report. Instead, once per run and device, with the device to itself (``tuner.on_quiet_device``):

- every operation the search can place (op, channels, stride, resolution of the start genome's cells;
  full width and, for the ops channel search narrows, one channel) is measured alone
  (``hardware.OpCostTable``): forward latency at ``latency_batch_size``, the memory it adds to a
  training step at the training batch, params and FLOPs;
- a few networks drawn from the search space (splits, random subsets of each edge's ops, narrowed
  widths) are measured whole, and non-negative least squares fits each figure on the network's summed
  op cost, its edge count and a constant (the stem, the heads and the glue between ops).

A round's estimate is then a table lookup and a sum (``CostModel.estimate``, well under a
millisecond). Ops the table lacks (a macro mutation's new width) are measured on first use where the
member runs. The model is stored in the run directory, so a resumed search reuses it; the networks
of the final front are measured for real after the search (``tuner.check_front``), against these
estimates.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from spidernet_ray.genome import Genome
from spidernet_ray.hardware import OpCostTable, measure
from spidernet_ray.ops import WIDTH_SITES
from spidernet_ray.supernet import DiscreteNet
from spidernet_ray.train import TRAINING_LAYOUT

CALIBRATION_NETWORKS = 6
# What the model estimates: report field -> (OpCostTable metric, batch of its measurement: the latency
# batch, the training batch, or one sample).
ESTIMATES = {
    "latency_ms": ("latency", "latency_batch_size"),
    "peak_memory_mb": ("memory", "batch_size"),
    "params": ("params", None),
    "flops": ("flops", None),
}


@dataclass
class CostModel:
    """Per-op cost tables (``OpCostTable``), and the lines from their sums to whole networks' figures."""

    device: str
    threads: int
    batch_size: int  # the training batch of the memory figures
    latency_batch_size: int
    tables: dict[str, OpCostTable]  # by report field (ESTIMATES)
    fits: dict[str, tuple[float, ...]]  # field -> coefficients of (sum of per-op costs, edges, 1)
    calibration: list[dict[str, Any]] = field(default_factory=list)  # the networks the lines were fitted on

    @property
    def latency(self) -> OpCostTable:
        return self.tables["latency_ms"]

    def estimate(self, genome: Genome) -> dict[str, float]:
        """Estimated latency_ms, peak_memory_mb, params and flops of the discrete network ``genome``."""
        figures = {name: _line(self.fits[name], features(genome, table)) for name, table in self.tables.items()}
        return {**figures, "params": round(figures["params"]), "flops": round(figures["flops"])}

    def to_json(self) -> str:
        return json.dumps({
            "device": self.device, "threads": self.threads, "batch_size": self.batch_size,
            "latency_batch_size": self.latency_batch_size,
            "tables": {name: table.entries() for name, table in self.tables.items()},
            "fits": {name: list(fit) for name, fit in self.fits.items()},
            "calibration": self.calibration,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str, device: torch.device | str | None = None) -> CostModel:
        """The stored model; ``device``: where missing ops get measured (default: the stored device)."""
        d = json.loads(text)
        tables = _tables(device if device is not None else d["device"], d)
        for name, table in tables.items():
            table.with_entries(d["tables"][name])
        return cls(d["device"], d["threads"], d["batch_size"], d["latency_batch_size"], tables,
                   {name: tuple(fit) for name, fit in d["fits"].items()}, d["calibration"])


def _tables(device: torch.device | str, sizes: dict[str, int]) -> dict[str, OpCostTable]:
    return {name: OpCostTable(metric, device, sizes[batch] if batch else 1) for name, (metric, batch) in ESTIMATES.items()}


def op_sum(genome: Genome, table: OpCostTable) -> float:
    """Sum of the per-op costs over ``genome``'s ops; a narrowed op (channel search) costs its full and
    one-channel widths' costs interpolated at its hidden width."""
    total = 0.0
    for site, width in genome.op_sites():
        full = table(*site)
        if width is None:
            total += full
        else:
            narrowest = table(*site, width=1)
            total += narrowest + (full - narrowest) * (width - 1) / max(site[1] - 1, 1)
    return total


def features(genome: Genome, table: OpCostTable) -> tuple[float, float, float]:
    """What a whole network's figure is fitted on: the sum of its ops' costs, its edge count (the sums
    and calls that join ops into nodes) and 1 (stem, heads)."""
    return op_sum(genome, table), float(sum(len(cell.edges) for cell in genome.cells)), 1.0


def _line(fit: tuple[float, ...], x: tuple[float, ...]) -> float:
    return max(0.0, float(np.dot(fit, x)))


def _fit(x: list[tuple[float, ...]], y: list[float]) -> tuple[float, ...]:
    """Non-negative least-squares coefficients of y on the features x: no cost falls as a network grows,
    however noisy the few calibration measurements."""
    from scipy.optimize import nnls

    return tuple(float(c) for c in nnls(np.asarray(x, float), np.asarray(y, float))[0])


def reachable_sites(genome: Genome, ops: tuple[str, ...]) -> list[tuple[str, int, int, tuple[int, int], int | None]]:
    """Every (op, channels, stride, resolution, hidden width) that any of ``ops`` can take on an edge of
    ``genome``'s cells: from a cell input (strided in a reduction cell) or from an internal node; full
    width, and one channel for the ops channel search narrows (``op_sum`` interpolates between them)."""
    sites = set()
    for k, cell in enumerate(genome.cells):
        in_res, out_res = genome.cell_resolution(max(k - 1, 0)), genome.cell_resolution(k)
        channels = genome.cell_channels(k)
        for op in ops:
            for width in (None, 1) if op in WIDTH_SITES and channels > 1 else (None,):
                sites.add((op, channels, 2 if cell.reduction else 1, in_res, width))
                sites.add((op, channels, 1, out_res, width))
    return sorted(sites, key=str)


def calibration_genomes(dense: Genome, count: int = CALIBRATION_NETWORKS, seed: int = 0) -> list[Genome]:
    """``count`` networks of the search space: ``dense`` (every candidate on every edge) as it is, then
    grown by up to three splits, each edge keeping a random number of its ops (from one, the sparsest
    network pruning reaches, to all) and, from the third on, a third of the narrowable ops narrowed to a
    random width (channel search)."""
    rng = random.Random(seed)
    genomes = [dense]
    for i in range(1, count):
        genome = dense
        for _ in range(rng.randint(0, 3)):
            cell = rng.randrange(len(genome.cells))
            genome = genome.split_edge(cell, *rng.choice(genome.candidate_splits(cell)))
        cells, widths = [], {}
        for k, cell in enumerate(genome.cells):
            edges = []
            for edge in cell.edges:
                ops = tuple(sorted(rng.sample(edge.ops, 1 if i == 1 else rng.randint(1, len(edge.ops)))))
                edges.append(replace(edge, ops=ops, widths=()))
                channels = genome.cell_channels(k)
                for op in ops:
                    if i >= 2 and op in WIDTH_SITES and channels > 1 and rng.random() < 1 / 3:
                        widths[(k, edge.src, edge.dst, op)] = rng.randint(1, channels - 1)
            cells.append(replace(cell, edges=tuple(edges)))
        genome = replace(genome, cells=tuple(cells))
        genomes.append(genome.with_widths(widths) if widths else genome)
    return genomes


def measure_cost_model(dense: Genome, batch_size: int, latency_batch_size: int = 1,
                       device: torch.device | str = "cpu", threads: int = 1, seed: int = 0) -> CostModel:
    """Measure the per-op tables of every op ``dense`` can carry and fit them to whole networks drawn
    from it. Runs with ``threads`` intra-op threads, as the members do; takes seconds."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tables = _tables(device, {"batch_size": batch_size, "latency_batch_size": latency_batch_size})
        ops = tuple(sorted({op for cell in dense.cells for e in cell.edges for op in e.ops}))
        for op, channels, stride, resolution, width in reachable_sites(dense, ops):
            for table in tables.values():
                table(op, channels, stride, resolution, width)
        calibration = []
        for genome in calibration_genomes(dense, seed=seed):
            net = DiscreteNet(genome).to(memory_format=TRAINING_LAYOUT)  # measured as the members train
            whole = measure(net, genome.input_shape, batch_size, device, latency_batch_size=latency_batch_size,
                            disposable=True).to_dict()
            calibration.append({"genome_hash": genome.hash, "ops": genome.ops_alive(),
                                **{name: whole[name] for name in ESTIMATES},
                                **{f"{name}_features": features(genome, table) for name, table in tables.items()}})
    finally:
        torch.set_num_threads(previous)
    fits = {name: _fit([c[f"{name}_features"] for c in calibration], [c[name] for c in calibration])
            for name in ESTIMATES}
    return CostModel(device=str(device), threads=threads, batch_size=batch_size,
                     latency_batch_size=latency_batch_size, tables=tables, fits=fits, calibration=calibration)
