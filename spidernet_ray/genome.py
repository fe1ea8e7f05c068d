"""Architecture genome: an immutable, JSON-serialisable description of a network.

A genome fixes the macro structure (R reduction cells after one normal cell, initial channels C,
input shape, class count) and, per cell, a DAG of nodes whose edges carry the set of surviving
operation names. Node ids inside a cell: the inputs are 0..n_inputs-1 (the stem output and every
earlier cell's output), the output node is ``n_inputs``, internal nodes are larger ids.

Genomes never change in place: ``split_edge`` (growth) and ``remove_op`` (pruning) return new ones,
and so do the search-space extensions: ``with_widths`` (channel search narrows an op's hidden width,
recorded per edge only where it differs from the cell's channels), ``macro_mutation`` (add or remove a
cell, widen or narrow the initial channels) and ``crossover`` (cells from two parents).

A clone's mutations are registered by name (``register_mutation``, timm-style) and move both ways:
``split`` and ``add_op`` grow, ``drop_op`` and ``remove_node`` shrink, ``swap_op`` replaces an op.
``fill_the_gap`` picks among candidate children by a cheap estimate (LEMONADE's cheap objectives first).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field, replace
from functools import cached_property

from typing import Callable, Iterator

from spidernet_ray.ops import OPS, WIDTH_SITES

FORMAT_VERSION = 1
MACRO_MUTATIONS = ("add_cell", "remove_cell", "widen", "narrow")
GROW_OPS = 2  # candidate ops on each edge of a split's new path: growth stays cheap to train
WIDTH_STEP = 1.5  # widen multiplies the initial channels by this, narrow divides by it


class GenomeError(ValueError):
    """A genome that does not describe a buildable network."""


@dataclass(frozen=True, order=True)
class Edge:
    src: int
    dst: int
    ops: tuple[str, ...]
    widths: tuple[tuple[str, int], ...] = ()  # (op, hidden width) of ops narrowed by channel search

    @property
    def key(self) -> tuple[int, int]:
        return (self.src, self.dst)

    def width(self, op: str) -> int | None:
        """The op's hidden width when channel search narrowed it, else None (as wide as the cell)."""
        return dict(self.widths).get(op)


@dataclass(frozen=True)
class Cell:
    n_inputs: int
    reduction: bool
    nodes: tuple[int, ...]  # internal node ids (inputs and output excluded)
    edges: tuple[Edge, ...]

    @property
    def output(self) -> int:
        return self.n_inputs

    @property
    def inputs(self) -> range:
        return range(self.n_inputs)

    def edge(self, src: int, dst: int) -> Edge:
        for e in self.edges:
            if e.key == (src, dst):
                return e
        raise GenomeError(f"cell has no edge {src}->{dst}")

    def topological_order(self) -> list[int]:
        """Internal nodes then the output, each after all of its predecessors (raises on a cycle)."""
        pending = set(self.nodes) | {self.output}
        done = set(self.inputs)
        order = []
        while pending:
            ready = sorted(n for n in pending if all(e.src in done for e in self.edges if e.dst == n))
            if not ready:
                raise GenomeError(f"cell has a cycle through nodes {sorted(pending)}")
            order.extend(ready)
            done.update(ready)
            pending.difference_update(ready)
        return order

    def reachable_from_inputs(self) -> set[int]:
        seen = set(self.inputs)
        frontier = list(seen)
        while frontier:
            node = frontier.pop()
            for e in self.edges:
                if e.src == node and e.dst not in seen:
                    seen.add(e.dst)
                    frontier.append(e.dst)
        return seen

    def reaching_output(self) -> set[int]:
        seen = {self.output}
        frontier = [self.output]
        while frontier:
            node = frontier.pop()
            for e in self.edges:
                if e.dst == node and e.src not in seen:
                    seen.add(e.src)
                    frontier.append(e.src)
        return seen

    def without_orphans(self) -> Cell:
        """Drop internal nodes that lost their path from an input or to the output, with their edges."""
        live = self.reachable_from_inputs() & self.reaching_output()
        nodes = tuple(n for n in self.nodes if n in live)
        keep = live | set(self.inputs) | {self.output}
        edges = tuple(e for e in self.edges if e.src in keep and e.dst in keep)
        return replace(self, nodes=nodes, edges=edges)


@dataclass(frozen=True)
class Genome:
    reductions: int
    channels: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    cells: tuple[Cell, ...] = field(default=())

    def __post_init__(self):
        # Canonical form (sorted nodes, edges and ops) so equal architectures compare and hash equal.
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        cells = tuple(
            replace(
                c,
                nodes=tuple(sorted(c.nodes)),
                edges=tuple(sorted(self._canonical_edge(e, self.cell_channels(k)) for e in c.edges)),
            )
            for k, c in enumerate(self.cells)
        )
        object.__setattr__(self, "cells", cells)
        self.validate()

    @staticmethod
    def _canonical_edge(e: Edge, channels: int) -> Edge:
        # A width is kept only for an op the edge has, and only where it differs from the cell's channels.
        ops = tuple(sorted(set(e.ops)))
        widths = tuple(sorted((op, w) for op, w in dict(e.widths).items() if op in ops and w != channels))
        return Edge(e.src, e.dst, ops, widths)

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        if self.channels <= 0:
            raise GenomeError(f"channels must be positive, got {self.channels}")
        if self.reductions < 0:
            raise GenomeError(f"reductions must be >= 0, got {self.reductions}")
        if self.num_classes < 2:
            raise GenomeError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.input_shape) != 3 or min(self.input_shape) <= 0:
            raise GenomeError(f"input_shape must be three positive sizes (C, H, W), got {self.input_shape}")
        side = min(self.input_shape[1:])
        if 2**self.reductions > side:
            raise GenomeError(
                f"{self.reductions} reductions halve a {side}px input below 1px; "
                f"at most {side.bit_length() - 1} fit"
            )
        if len(self.cells) != self.reductions + 1:
            raise GenomeError(f"expected {self.reductions + 1} cells for R={self.reductions}, got {len(self.cells)}")
        for index, cell in enumerate(self.cells):
            self._validate_cell(index, cell)

    @staticmethod
    def _validate_cell(index: int, cell: Cell) -> None:
        where = f"cell {index}"
        if cell.n_inputs != index + 1:
            raise GenomeError(f"{where}: densely connected cells take {index + 1} inputs, got {cell.n_inputs}")
        if cell.reduction != (index > 0):
            raise GenomeError(f"{where}: cell 0 is normal and every later cell a reduction cell")
        if any(n <= cell.output for n in cell.nodes):
            raise GenomeError(f"{where}: internal node ids must be > {cell.output}, got {list(cell.nodes)}")
        known = set(cell.inputs) | {cell.output} | set(cell.nodes)
        seen = set()
        for e in cell.edges:
            if e.src not in known or e.dst not in known:
                raise GenomeError(f"{where}: edge {e.src}->{e.dst} refers to a missing node")
            if e.dst in cell.inputs:
                raise GenomeError(f"{where}: edge {e.src}->{e.dst} enters an input node")
            if e.src == cell.output:
                raise GenomeError(f"{where}: edge {e.src}->{e.dst} leaves the output node")
            if e.key in seen:
                raise GenomeError(f"{where}: duplicate edge {e.src}->{e.dst}")
            seen.add(e.key)
            if not e.ops:
                raise GenomeError(f"{where}: edge {e.src}->{e.dst} has no operations")
            unknown = [op for op in e.ops if op not in OPS]
            if unknown:
                raise GenomeError(f"{where}: unknown operation {unknown[0]!r}; known: {', '.join(sorted(OPS))}")
            for op, width in e.widths:
                if op not in WIDTH_SITES:
                    raise GenomeError(f"{where}: operation {op!r} on edge {e.src}->{e.dst} has no width to narrow")
                if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
                    raise GenomeError(f"{where}: width of {op} on edge {e.src}->{e.dst} must be positive, "
                                      f"got {width!r}")
        cell.topological_order()  # raises on a cycle
        from_inputs, to_output = cell.reachable_from_inputs(), cell.reaching_output()
        if cell.output not in from_inputs:
            raise GenomeError(f"{where}: no path from an input to the output node")
        for n in cell.nodes:
            if n not in from_inputs or n not in to_output:
                raise GenomeError(f"{where}: node {n} has no path from an input to the output")

    # -- identity and serialisation ---------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "reductions": self.reductions,
            "channels": self.channels,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "cells": [
                {
                    "n_inputs": c.n_inputs,
                    "reduction": c.reduction,
                    "nodes": list(c.nodes),
                    "edges": [_edge_dict(e) for e in c.edges],
                }
                for c in self.cells
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> Genome:
        if not isinstance(data, dict):
            raise GenomeError("genome JSON must be an object")
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise GenomeError(f"unsupported genome version {data.get('version')!r}")
        expected = {"version", "reductions", "channels", "input_shape", "num_classes", "cells"}
        unknown = set(data) - expected
        if unknown:
            raise GenomeError(f"unknown genome key(s): {', '.join(sorted(unknown))}")
        missing = expected - {"version"} - set(data)
        if missing:
            raise GenomeError(f"genome JSON lacks key(s): {', '.join(sorted(missing))}")
        try:
            cells = tuple(
                Cell(
                    n_inputs=int(c["n_inputs"]),
                    reduction=bool(c["reduction"]),
                    nodes=tuple(int(n) for n in c["nodes"]),
                    edges=tuple(
                        Edge(int(e["src"]), int(e["dst"]), tuple(str(o) for o in e["ops"]),
                             tuple((str(o), int(w)) for o, w in e.get("widths", {}).items()))
                        for e in c["edges"]
                    ),
                )
                for c in data["cells"]
            )
            return cls(
                reductions=int(data["reductions"]),
                channels=int(data["channels"]),
                input_shape=tuple(int(v) for v in data["input_shape"]),
                num_classes=int(data["num_classes"]),
                cells=cells,
            )
        except GenomeError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # ValueError: int("wide")
            raise GenomeError(f"malformed genome JSON: {exc!r}") from None

    @classmethod
    def from_json(cls, text: str) -> Genome:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenomeError(f"genome is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @cached_property
    def hash(self) -> str:
        """Stable content hash: equal architectures hash equal across processes and versions."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    # -- derived structure ------------------------------------------------------------------
    def cell_channels(self, index: int) -> int:
        return self.channels * 2**index

    def cell_resolution(self, index: int) -> tuple[int, int]:
        """Spatial size of cell ``index``'s output (each reduction halves it, rounding up)."""
        h, w = self.input_shape[1:]
        for _ in range(index):
            h, w = -(-h // 2), -(-w // 2)
        return h, w

    def ops_alive(self) -> int:
        return sum(len(e.ops) for c in self.cells for e in c.edges)

    def candidate_splits(self, cell: int) -> list[tuple[int, int]]:
        """Every edge of the cell can be split."""
        return [e.key for e in self.cells[cell].edges]

    # -- mutations --------------------------------------------------------------------------
    def split_edge(self, cell: int, src: int, dst: int, ops: tuple[str, ...] | None = None) -> Genome:
        """Growth: keep edge src->dst and add a path src->new->dst whose edges carry every candidate op."""
        c = self._cell(cell)
        c.edge(src, dst)  # raises if absent
        new = max((c.output, *c.nodes)) + 1
        fresh = tuple(ops) if ops is not None else default_candidates()
        edges = c.edges + (Edge(src, new, fresh), Edge(new, dst, fresh))
        return self._with_cell(cell, replace(c, nodes=c.nodes + (new,), edges=edges))

    def remove_op(self, cell: int, src: int, dst: int, op: str) -> Genome:
        """Pruning: drop one op; an edge left empty goes, and so do nodes orphaned by that.

        Raises GenomeError when the removal would cut every path from the inputs to the output.
        """
        c = self._cell(cell)
        edge = c.edge(src, dst)
        if op not in edge.ops:
            raise GenomeError(f"cell {cell}: edge {src}->{dst} has no operation {op!r}")
        remaining = tuple(o for o in edge.ops if o != op)
        edges = tuple(
            (replace(e, ops=remaining) if e.key == (src, dst) else e) for e in c.edges if e.key != (src, dst) or remaining
        )
        pruned = replace(c, edges=edges)
        if c.output not in pruned.reachable_from_inputs():
            raise GenomeError(f"cell {cell}: removing {op} from {src}->{dst} disconnects the output")
        return self._with_cell(cell, pruned.without_orphans())

    def add_op(self, cell: int, src: int, dst: int, op: str) -> Genome:
        """Growth: one more candidate op on an existing edge."""
        c = self._cell(cell)
        edge = c.edge(src, dst)
        if op in edge.ops:
            raise GenomeError(f"cell {cell}: edge {src}->{dst} already has {op!r}")
        return self._with_cell(cell, _replace_edge(c, replace(edge, ops=edge.ops + (op,))))

    def drop_op(self, cell: int, src: int, dst: int, op: str) -> Genome:
        """Shrinking: drop one op from an edge that keeps at least one (``remove_op`` may empty it)."""
        if len(self._cell(cell).edge(src, dst).ops) < 2:
            raise GenomeError(f"cell {cell}: edge {src}->{dst} has only one op")
        return self.remove_op(cell, src, dst, op)

    def swap_op(self, cell: int, src: int, dst: int, old: str, new: str) -> Genome:
        """Replace op ``old`` of an edge by ``new`` (not already there)."""
        return self.add_op(cell, src, dst, new).remove_op(cell, src, dst, old)

    def remove_node(self, cell: int, node: int) -> Genome:
        """Shrinking: delete an internal node with its edges (raises when that disconnects the output)."""
        c = self._cell(cell)
        if node not in c.nodes:
            raise GenomeError(f"cell {cell} has no internal node {node}")
        pruned = replace(c, nodes=tuple(n for n in c.nodes if n != node),
                         edges=tuple(e for e in c.edges if node not in e.key))
        if c.output not in pruned.reachable_from_inputs():
            raise GenomeError(f"cell {cell}: removing node {node} disconnects the output")
        return self._with_cell(cell, pruned.without_orphans())

    def op_sites(self) -> Iterator[tuple[tuple[str, int, int, tuple[int, int]], int | None]]:
        """((op, channels, stride, input resolution), hidden width or None when full) of every op: what a
        per-op cost table is keyed by."""
        for k, c in enumerate(self.cells):
            in_res, out_res = self.cell_resolution(max(k - 1, 0)), self.cell_resolution(k)
            for e in c.edges:
                from_input = e.src in c.inputs
                stride = 2 if c.reduction and from_input else 1
                for op in e.ops:
                    yield (op, self.cell_channels(k), stride, in_res if from_input else out_res), e.width(op)

    def with_channels(self, channels: int) -> Genome:
        """The same cells at another initial width; narrowed ops keep their share of the cell's channels."""
        if not self.has_widths():
            return replace(self, channels=channels)
        cells = tuple(
            replace(c, edges=tuple(
                replace(e, widths=tuple((op, max(1, round(w * channels / self.channels))) for op, w in e.widths))
                for e in c.edges))
            for c in self.cells
        )
        return replace(self, channels=channels, cells=cells)

    def has_widths(self) -> bool:
        return any(e.widths for c in self.cells for e in c.edges)

    def with_widths(self, widths: dict[tuple[int, int, int, str], int]) -> Genome:
        """Channel search: set the hidden width of ops, keyed (cell, src, dst, op)."""
        cells = list(self.cells)
        for (k, src, dst, op), width in widths.items():
            self._cell(k)  # raises for a cell the genome lacks
            c = cells[k]
            edge = c.edge(src, dst)
            if op not in edge.ops:
                raise GenomeError(f"cell {k}: edge {src}->{dst} has no operation {op!r}")
            new = replace(edge, widths=tuple({**dict(edge.widths), op: int(width)}.items()))
            cells[k] = c = replace(c, edges=tuple(new if e.key == edge.key else e for e in c.edges))
        return replace(self, cells=tuple(cells))

    # -- macro mutations and crossover ------------------------------------------------------
    def add_cell(self) -> Genome:
        """One more reduction cell at the end, in the initial form (raises when the input is too small)."""
        return _with_reductions(self, self.reductions + 1, self.cells + (_initial_cell(len(self.cells)),))

    def remove_cell(self) -> Genome:
        """Drop the last cell (earlier cells never read later ones, so they stay as they are)."""
        if self.reductions == 0:
            raise GenomeError("cannot remove a cell: the network has only its normal cell")
        return _with_reductions(self, self.reductions - 1, self.cells[:-1])

    def macro_mutation(self, kind: str) -> Genome:
        """``add_cell``, ``remove_cell``, ``widen`` or ``narrow`` (initial channels times or over WIDTH_STEP)."""
        if kind == "add_cell":
            return self.add_cell()
        if kind == "remove_cell":
            return self.remove_cell()
        if kind == "widen":
            return self.with_channels(max(self.channels + 1, round(self.channels * WIDTH_STEP)))
        if kind == "narrow":
            if self.channels == 1:
                raise GenomeError("cannot narrow a network of one channel")
            return self.with_channels(max(1, min(self.channels - 1, round(self.channels / WIDTH_STEP))))
        raise GenomeError(f"unknown macro mutation {kind!r}; choose from {', '.join(MACRO_MUTATIONS)}")

    def crossover(self, other: Genome, from_other: set[int] | frozenset[int]) -> Genome:
        """A child with this genome's macro structure whose cells ``from_other`` come from ``other``.

        A cell's shape depends only on its position (its inputs are the stem and every earlier cell),
        so any mix of same-position cells is a valid network. Widths of cells taken from a parent of
        another initial width are scaled to this one's.
        """
        if (other.input_shape, other.num_classes) != (self.input_shape, self.num_classes):
            raise GenomeError("crossover needs parents for the same input shape and class count")
        missing = sorted(k for k in from_other if not 0 <= k < min(len(self.cells), len(other.cells)))
        if missing:
            raise GenomeError(f"crossover: cell(s) {missing} are not in both parents")
        donor = other.with_channels(self.channels) if other.channels != self.channels else other
        cells = tuple(donor.cells[k] if k in from_other else c for k, c in enumerate(self.cells))
        return replace(self, cells=cells)

    def _cell(self, index: int) -> Cell:
        if not 0 <= index < len(self.cells):
            raise GenomeError(f"no cell {index}; the genome has {len(self.cells)}")
        return self.cells[index]

    def _with_cell(self, index: int, cell: Cell) -> Genome:
        cells = list(self.cells)
        cells[index] = cell
        return replace(self, cells=tuple(cells))


def _replace_edge(cell: Cell, edge: Edge) -> Cell:
    return replace(cell, edges=tuple(edge if e.key == edge.key else e for e in cell.edges))


# -- the mutation registry ------------------------------------------------------------------------
# A mutation draws its own site with ``rng`` and returns the child genome, or raises GenomeError when
# the genome offers it no site (a shrink of a network already minimal).
Mutation = Callable[[Genome, random.Random], Genome]
MUTATIONS: dict[str, Mutation] = {}


def register_mutation(name: str) -> Callable[[Mutation], Mutation]:
    """Decorator: register a mutation under ``name`` (names are unique)."""

    def register(mutation: Mutation) -> Mutation:
        if name in MUTATIONS:
            raise ValueError(f"mutation {name!r} is already registered")
        MUTATIONS[name] = mutation
        return mutation

    return register


def mutate(genome: Genome, name: str, rng: random.Random) -> Genome:
    try:
        mutation = MUTATIONS[name]
    except KeyError:
        raise GenomeError(f"unknown mutation {name!r}; known: {', '.join(sorted(MUTATIONS))}") from None
    return mutation(genome, rng)


def _edges(genome: Genome, keep: Callable[[Edge], bool] = lambda e: True) -> list[tuple[int, Edge]]:
    sites = [(k, e) for k, c in enumerate(genome.cells) for e in c.edges if keep(e)]
    if not sites:
        raise GenomeError("no edge offers a site for this mutation")
    return sites


@register_mutation("split")
def grow_split(genome: Genome, rng: random.Random) -> Genome:
    """A new path beside an edge, each new edge with GROW_OPS random candidates (the supernet starts the
    path at zero output, so the child computes its parent's function)."""
    k, e = rng.choice(_edges(genome))
    return genome.split_edge(k, e.src, e.dst, tuple(rng.sample(sorted(OPS), min(GROW_OPS, len(OPS)))))


@register_mutation("add_op")
def grow_op(genome: Genome, rng: random.Random) -> Genome:
    k, e = rng.choice(_edges(genome, lambda e: len(e.ops) < len(OPS)))
    return genome.add_op(k, e.src, e.dst, rng.choice([op for op in sorted(OPS) if op not in e.ops]))


@register_mutation("drop_op")
def shrink_op(genome: Genome, rng: random.Random) -> Genome:
    k, e = rng.choice(_edges(genome, lambda e: len(e.ops) > 1))
    return genome.drop_op(k, e.src, e.dst, rng.choice(e.ops))


@register_mutation("swap_op")
def swap_op(genome: Genome, rng: random.Random) -> Genome:
    k, e = rng.choice(_edges(genome, lambda e: len(e.ops) < len(OPS)))
    return genome.swap_op(k, e.src, e.dst, rng.choice(e.ops), rng.choice([op for op in sorted(OPS) if op not in e.ops]))


@register_mutation("remove_node")
def shrink_node(genome: Genome, rng: random.Random) -> Genome:
    sites = [(k, n) for k, c in enumerate(genome.cells) for n in c.nodes]
    rng.shuffle(sites)
    for k, node in sites:
        try:
            return genome.remove_node(k, node)
        except GenomeError:
            continue  # this node carries the cell's only path
    raise GenomeError("no internal node can go without disconnecting its cell")


def fill_the_gap(estimates: list[float], front: list[float]) -> int:
    """Index of the candidate whose estimate lies deepest inside the largest gap of the front's values
    (LEMONADE: cheap objectives first). Outside the front's range counts as a gap as wide as the
    distance to its nearest end, so an empty or one-point front favours the candidate farthest away."""
    points = sorted(front)

    def room(x: float) -> float:
        if not points:
            return 0.0
        below = [p for p in points if p <= x]
        above = [p for p in points if p >= x]
        if not below or not above:
            return abs(x - (points[0] if not below else points[-1]))
        return min(x - below[-1], above[0] - x)

    return max(range(len(estimates)), key=lambda i: room(estimates[i]))


def _edge_dict(e: Edge) -> dict:
    data = {"src": e.src, "dst": e.dst, "ops": list(e.ops)}
    if e.widths:  # only narrowed ops are written, so genomes without channel search keep their JSON and hash
        data["widths"] = dict(e.widths)
    return data


def _initial_cell(index: int, candidates: tuple[str, ...] | None = None,
                  draw: Callable[[], tuple[str, ...]] | None = None) -> Cell:
    """Cell ``index`` in its initial form: every input feeds one internal node, which feeds the output.
    ``draw`` (sparse starts) gives each edge its own ops instead of ``candidates``."""
    candidates = tuple(candidates) if candidates is not None else default_candidates()
    n_inputs = index + 1
    output, node = n_inputs, n_inputs + 1
    keys = [(i, node) for i in range(n_inputs)] + [(node, output)]
    edges = tuple(Edge(src, dst, draw() if draw else candidates) for src, dst in keys)
    return Cell(n_inputs=n_inputs, reduction=index > 0, nodes=(node,), edges=edges)


def _with_reductions(genome: Genome, reductions: int, cells: tuple[Cell, ...]) -> Genome:
    side = min(genome.input_shape[1:])
    if 2**reductions > side:
        raise GenomeError(f"cannot add a cell: {reductions} reductions halve a {side}px input below 1px")
    return replace(genome, reductions=reductions, cells=cells)


def default_candidates() -> tuple[str, ...]:
    """Every registered operation (the seven defaults plus any the user registered)."""
    return tuple(sorted(OPS))


def initial_genome(
    input_shape: tuple[int, int, int],
    num_classes: int,
    reductions: int = 2,
    channels: int = 16,
    ops: tuple[str, ...] | None = None,
    ops_per_edge: int | None = None,
    rng: random.Random | None = None,
) -> Genome:
    """The starting network: in each cell every input feeds one internal node, which feeds the output.

    ``ops_per_edge`` (a sparse start): each edge carries that many of the candidates, drawn with
    ``rng``, so a member trains a supernet little bigger than its network while the population, each
    member drawing its own, still covers every op.
    """
    pool = tuple(ops) if ops is not None else default_candidates()
    draw = None
    if ops_per_edge is not None and ops_per_edge < len(pool):
        rng = rng or random.Random(0)
        draw = lambda: tuple(rng.sample(pool, ops_per_edge))  # noqa: E731
    cells = tuple(_initial_cell(index, pool, draw) for index in range(reductions + 1))
    return Genome(reductions, channels, tuple(input_shape), num_classes, cells)
