"""Cell mutations that move both ways, keep the parent's function when they grow, and are chosen by
cheap latency estimates; latency-weighted gate pressure."""

import random

import pytest
import torch

from spidernet_ray.gates import gate_pressure
from spidernet_ray.genome import MUTATIONS, GenomeError, fill_the_gap, initial_genome, mutate
from spidernet_ray.hardware import estimated_cost
from spidernet_ray.supernet import SuperNet

SHAPE = (1, 8, 8)


def counted_cost(op, channels, stride, resolution):
    """A deterministic stand-in for the latency table: convs cost by kernel area, the rest little."""
    per_op = {"sep_conv_5x5": 25.0, "dil_conv_5x5": 25.0, "sep_conv_3x3": 9.0, "dil_conv_3x3": 9.0}
    return per_op.get(op, 1.0) * channels * resolution[0] * resolution[1] / stride**2


def sparse_genome(seed=0):
    return initial_genome(SHAPE, 3, reductions=1, channels=4, ops_per_edge=2, rng=random.Random(seed))


def test_the_registry_has_growing_shrinking_and_swapping_mutations():
    assert {"split", "add_op", "drop_op", "remove_node", "swap_op"} <= set(MUTATIONS)
    with pytest.raises(GenomeError, match="unknown mutation"):
        mutate(sparse_genome(), "teleport", random.Random(0))


@pytest.mark.parametrize("name, direction", [("split", 1), ("add_op", 1), ("drop_op", -1)])
def test_each_mutation_moves_the_estimated_latency_its_way(name, direction):
    parent = sparse_genome()
    for seed in range(5):
        child = mutate(parent, name, random.Random(seed))  # a valid genome (validated on construction)
        change = estimated_cost(child, counted_cost) - estimated_cost(parent, counted_cost)
        assert change * direction > 0


def test_remove_node_shrinks_and_refuses_the_cells_only_path():
    parent = sparse_genome()
    with pytest.raises(GenomeError, match="no internal node"):
        mutate(parent, "remove_node", random.Random(0))
    grown = parent.split_edge(0, 0, 2, ("sep_conv_3x3",))
    child = mutate(grown, "remove_node", random.Random(0))
    assert estimated_cost(child, counted_cost) < estimated_cost(grown, counted_cost)
    assert sum(len(c.nodes) for c in child.cells) == sum(len(c.nodes) for c in grown.cells) - 1


def test_swap_keeps_the_op_count_and_drop_keeps_one_op_per_edge():
    parent = sparse_genome()
    swapped = mutate(parent, "swap_op", random.Random(1))
    assert swapped.ops_alive() == parent.ops_alive() and swapped != parent
    single = initial_genome(SHAPE, 3, reductions=1, channels=4, ops=("identity",))
    with pytest.raises(GenomeError):
        mutate(single, "drop_op", random.Random(0))


def test_a_sparse_start_draws_its_ops_per_edge_and_member():
    a, b = sparse_genome(1), sparse_genome(2)
    assert all(len(e.ops) == 2 for c in a.cells for e in c.edges)
    assert a != b


@pytest.mark.parametrize("name", ["split", "add_op"])
def test_growth_keeps_the_parents_function(name):
    torch.manual_seed(0)
    net = SuperNet(sparse_genome())
    x = torch.randn(4, *SHAPE)
    for _ in range(3):  # move the BatchNorm statistics off their initial values
        net(x)
    net.eval()
    before = net(x)
    rng = random.Random(3)
    child = mutate(net.genome, name, rng)
    if name == "add_op":  # an op with a BatchNorm at its end, so it can start silent
        k, e = next((k, e) for k, c in enumerate(net.genome.cells) for e in c.edges if "sep_conv_3x3" not in e.ops)
        child = net.genome.add_op(k, e.src, e.dst, "sep_conv_3x3")
    net.set_genome(child)
    net.eval()
    assert net.genome.ops_alive() > sparse_genome().ops_alive()
    torch.testing.assert_close(net(x), before, rtol=0, atol=0)


def test_the_clone_fills_the_largest_gap_of_the_front():
    front = [1.0, 2.0, 10.0]
    assert fill_the_gap([1.5, 6.0, 2.1], front) == 1
    assert fill_the_gap([0.5, 3.0], []) in (0, 1)  # no front: any candidate
    assert fill_the_gap([1.9, 30.0], [2.0]) == 1  # outside a one-point front, the farther one


def test_latency_weighted_pressure_closes_costly_ops_before_cheap_ones():
    torch.manual_seed(0)
    genome = initial_genome(SHAPE, 3, reductions=0, channels=4, ops=("identity", "sep_conv_5x5"))
    net = SuperNet(genome)
    gates = net.gate_parameters()
    optimizer = torch.optim.SGD(gates, lr=0.1)
    for _ in range(3):  # pressure alone: the costlier op's gate falls faster and shuts first
        optimizer.zero_grad()
        gate_pressure(net.mixed_edges(), counted_cost, mu=10.0, lam=1e-2).backward()
        optimizer.step()
    edge = net.mixed_edges()[0]
    w = {name: float(edge.gate_weights[name].detach()) for name in edge.op_names}
    assert w["sep_conv_5x5"] < 0 < w["identity"]
