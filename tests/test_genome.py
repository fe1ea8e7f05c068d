"""The genome: immutable, serialisable, validated, mutated only into new genomes."""

import dataclasses
import json

import pytest

from spidernet_ray.genome import Cell, Edge, Genome, GenomeError, default_candidates, initial_genome
from spidernet_ray.ops import DEFAULT_OPS


@pytest.fixture
def genome():
    return initial_genome((1, 8, 8), 10, reductions=2, channels=8)


def test_initial_genome_has_one_internal_node_per_cell_fed_by_every_input(genome):
    assert len(genome.cells) == 3
    for index, cell in enumerate(genome.cells):
        assert cell.n_inputs == index + 1
        assert cell.reduction == (index > 0)
        (node,) = cell.nodes
        assert {e.key for e in cell.edges} == {(i, node) for i in cell.inputs} | {(node, cell.output)}
        assert all(e.ops == tuple(sorted(DEFAULT_OPS)) for e in cell.edges)


def test_json_round_trip_gives_an_equal_genome_with_the_same_hash(genome):
    grown = genome.split_edge(1, 0, 3)
    back = Genome.from_json(grown.to_json())
    assert back == grown
    assert back.hash == grown.hash
    assert json.loads(grown.to_json())["version"] == 1


def test_equal_architectures_hash_equal_whatever_the_listing_order(genome):
    cell = genome.cells[0]
    shuffled = dataclasses.replace(
        cell, edges=tuple(Edge(e.src, e.dst, tuple(reversed(e.ops))) for e in reversed(cell.edges))
    )
    other = dataclasses.replace(genome, cells=(shuffled,) + genome.cells[1:])
    assert other == genome and other.hash == genome.hash


def test_different_architectures_hash_differently(genome):
    assert genome.split_edge(0, 0, 2).hash != genome.hash
    assert genome.with_channels(16).hash != genome.hash


def test_genome_is_immutable(genome):
    with pytest.raises(dataclasses.FrozenInstanceError):
        genome.channels = 32


def test_split_edge_keeps_the_old_edge_and_adds_a_path_through_a_new_node(genome):
    child = genome.split_edge(0, 0, 2)
    cell = child.cells[0]
    assert cell.nodes == (2, 3)
    assert cell.edge(0, 2) == genome.cells[0].edge(0, 2)
    assert cell.edge(0, 3).ops == default_candidates()
    assert cell.edge(3, 2).ops == default_candidates()
    assert genome.cells[0].nodes == (2,)  # the parent is untouched


def test_remove_op_drops_empty_edges_and_orphaned_nodes(genome):
    child = genome.split_edge(0, 0, 2)  # 0->2, 0->3, 3->2, 2->1
    for op in default_candidates():
        child = child.remove_op(0, 0, 3, op)
    cell = child.cells[0]
    assert 3 not in cell.nodes
    assert {e.key for e in cell.edges} == {(0, 2), (2, 1)}


def test_remove_op_refuses_to_disconnect_the_output(genome):
    g = genome
    *rest, last = default_candidates()
    for op in rest:
        g = g.remove_op(0, 2, 1, op)
    with pytest.raises(GenomeError, match="disconnects the output"):
        g.remove_op(0, 2, 1, last)


def _with_cell0(genome, **changes):
    return dataclasses.replace(genome.cells[0], **changes)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda g: _with_cell0(g, edges=(Edge(0, 2, ("conv_7x7_magic",)), Edge(2, 1, ("identity",)))),
         "unknown operation 'conv_7x7_magic'"),
        (lambda g: _with_cell0(g, nodes=(2, 3), edges=(Edge(0, 2, ("identity",)), Edge(2, 3, ("identity",)),
                                                      Edge(3, 2, ("identity",)), Edge(3, 1, ("identity",)))),
         "cycle"),
        (lambda g: _with_cell0(g, edges=(Edge(0, 2, ("identity",)), Edge(2, 9, ("identity",)), Edge(2, 1, ("identity",)))),
         "edge 2->9 refers to a missing node"),
        (lambda g: _with_cell0(g, nodes=(2, 3), edges=(Edge(0, 2, ("identity",)), Edge(2, 1, ("identity",)),
                                                      Edge(0, 3, ("identity",)))),
         "node 3 has no path from an input to the output"),
        (lambda g: _with_cell0(g, edges=(Edge(0, 2, ("identity",)),)),
         "no path from an input to the output node"),
        (lambda g: _with_cell0(g, edges=(Edge(0, 2, ()), Edge(2, 1, ("identity",)))),
         "has no operations"),
    ],
    ids=["unknown-op", "cycle", "missing-node", "node-without-path", "output-unreachable", "empty-edge"],
)
def test_invalid_cells_are_rejected_with_a_readable_message(genome, make, message):
    with pytest.raises(GenomeError, match=message):
        dataclasses.replace(genome, cells=(make(genome),) + genome.cells[1:])


def test_too_many_reductions_for_the_input_resolution_is_rejected():
    with pytest.raises(GenomeError, match="4 reductions halve a 8px input below 1px; at most 3 fit"):
        initial_genome((1, 8, 8), 10, reductions=4)


@pytest.mark.parametrize("channels", [0, -4])
def test_non_positive_channels_are_rejected(channels):
    with pytest.raises(GenomeError, match=f"channels must be positive, got {channels}"):
        initial_genome((1, 8, 8), 10, channels=channels)


def test_malformed_json_is_a_genome_error():
    with pytest.raises(GenomeError, match="not valid JSON"):
        Genome.from_json("{not json")
    with pytest.raises(GenomeError, match="unknown genome key"):
        Genome.from_json(json.dumps({**initial_genome((1, 8, 8), 10).to_dict(), "colour": "red"}))


def test_cell_count_must_match_reductions(genome):
    with pytest.raises(GenomeError, match="expected 3 cells"):
        dataclasses.replace(genome, cells=genome.cells[:2])


def test_cells_are_densely_connected(genome):
    wrong = Cell(n_inputs=1, reduction=True, nodes=(2,), edges=(Edge(0, 2, ("identity",)), Edge(2, 1, ("identity",))))
    with pytest.raises(GenomeError, match="cell 1: densely connected cells take 2 inputs"):
        dataclasses.replace(genome, cells=(genome.cells[0], wrong, genome.cells[2]))
