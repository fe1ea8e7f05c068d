"""The supernet: gradients reach every gate, dead ops are deleted for real, growth inherits exactly,
and the discrete network computes the same function."""

import pytest
import torch

from spidernet_ray.genome import initial_genome
from spidernet_ray.supernet import DiscreteNet, SuperNet, supernet_loss
from spidernet_ray.train import make_optimizer, prune_after_epoch, train_step

INPUT = (1, 8, 8)


@pytest.fixture
def genome():
    return initial_genome(INPUT, 10, reductions=2, channels=8)


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *INPUT, generator=g), torch.randint(0, 10, (n,), generator=g)


def close(net, cell, key, op):
    with torch.no_grad():
        net.cells[cell].edges[key].gate_weights[op].fill_(-0.05)


def module_ops(net):
    return {
        (cell.index, *map(int, key.split("_"))): tuple(sorted(edge.op_names))
        for cell in net.cells
        for key, edge in cell.edges.items()
    }


def genome_ops(genome):
    return {(k, e.src, e.dst): e.ops for k, cell in enumerate(genome.cells) for e in cell.edges}


def test_forward_gives_logits_per_head_with_the_aux_weighted_loss(genome):
    net = SuperNet(genome)
    x, y = batch()
    heads = net.forward_heads(x)
    assert [h.shape for h in heads] == [(16, 10)] * 3
    expected = sum(0.4 * torch.nn.functional.cross_entropy(h, y) for h in heads[:-1])
    expected = expected + torch.nn.functional.cross_entropy(heads[-1], y)
    assert torch.allclose(supernet_loss(heads, y), expected)


def test_gradient_reaches_every_gate_including_closed_ones(genome):
    net = SuperNet(genome)
    close(net, 1, "0_3", "sep_conv_3x3")
    x, y = batch()
    supernet_loss(net.forward_heads(x), y).backward()
    gates = net.gate_parameters()
    assert len(gates) == genome.ops_alive()
    assert all(w.grad is not None for w in gates)
    assert sum(bool(w.grad.abs() > 0) for w in gates) > 0.9 * len(gates)
    closed = net.cells[1].edges["0_3"].gate_weights["sep_conv_3x3"]
    assert closed.grad.abs() > 0


def test_deadheading_deletes_rarely_open_ops_and_the_genome_matches_the_module_tree(genome):
    net = SuperNet(genome, window=1)
    opt = make_optimizer(net)
    close(net, 0, "0_2", "sep_conv_5x5")
    close(net, 2, "4_3", "dil_conv_5x5")  # cell 2: inputs 0-2, output 3, internal node 4
    before = net.num_params()
    weight = net.cells[0].edges["0_2"].ops["sep_conv_5x5"][1].weight
    x, y = batch()
    for _ in range(3):
        close(net, 0, "0_2", "sep_conv_5x5")
        close(net, 2, "4_3", "dil_conv_5x5")
        train_step(net, opt, x, y)
    removed = prune_after_epoch(net, opt)
    assert set(removed) == {(0, 0, 2, "sep_conv_5x5"), (2, 4, 3, "dil_conv_5x5")}
    assert net.num_params() < before
    assert "sep_conv_5x5" not in net.cells[0].edges["0_2"].ops
    assert module_ops(net) == genome_ops(net.genome)
    assert all(p is not weight for group in opt.param_groups for p in group["params"])
    train_step(net, opt, x, y)  # the optimiser keeps working on the pruned network


def test_deadheading_waits_for_a_full_window(genome):
    net = SuperNet(genome, window=2)
    opt = make_optimizer(net)
    close(net, 0, "0_2", "sep_conv_5x5")
    x, y = batch()
    train_step(net, opt, x, y)
    close(net, 0, "0_2", "sep_conv_5x5")
    assert prune_after_epoch(net, opt) == []


def test_deadheading_never_disconnects_a_cell(genome):
    net = SuperNet(genome, window=1)
    opt = make_optimizer(net)
    for op in net.cells[0].edges["2_1"].op_names:
        close(net, 0, "2_1", op)
    x, y = batch()
    train_step(net, opt, x, y)
    for op in net.cells[0].edges["2_1"].op_names:
        close(net, 0, "2_1", op)
    prune_after_epoch(net, opt)
    assert len(net.genome.cells[0].edge(2, 1).ops) == 1
    assert module_ops(net) == genome_ops(net.genome)


def test_a_split_keeps_every_parent_tensor_bit_identical_and_adds_open_edges(genome):
    net = SuperNet(genome)
    x, y = batch()
    train_step(net, make_optimizer(net), x, y)  # move weights and BN statistics away from init
    parent = {k: v.clone() for k, v in net.state_dict().items()}
    net.apply_split(1, 0, 3)
    child = net.state_dict()
    assert set(parent) < set(child)
    assert all(torch.equal(parent[k], child[k]) for k in parent)
    new_edges = [net.cells[1].edges["0_4"], net.cells[1].edges["4_3"]]
    assert all(edge.is_open(op) for edge in new_edges for op in edge.op_names)
    assert module_ops(net) == genome_ops(net.genome)
    assert net.forward_heads(x)[-1].shape == (16, 10)


def test_discrete_network_has_no_gates_and_matches_the_supernet_in_eval_mode(genome):
    net = SuperNet(genome.split_edge(0, 0, 2), drop_path=0.2)
    x, y = batch()
    opt = make_optimizer(net)
    for _ in range(2):
        train_step(net, opt, x, y)
    close(net, 0, "0_3", "sep_conv_3x3")
    for op in net.cells[0].edges["3_2"].op_names:  # a whole edge closed: it contributes zeros
        close(net, 0, "3_2", op)
    discrete = net.to_discrete()
    assert isinstance(discrete, DiscreteNet)
    assert not any("gate" in name for name, _ in discrete.named_parameters())
    assert "sep_conv_3x3" not in discrete.cells[0].edges["0_3"].ops
    assert discrete.num_params() < net.num_params()
    net.eval(), discrete.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), discrete(x), atol=1e-6)


def test_sigmoid_gates_train_and_discretise(genome):
    net = SuperNet(genome, gate="sigmoid")
    x, y = batch()
    opt = make_optimizer(net)
    net.anneal_gates(0.5)
    train_step(net, opt, x, y)
    assert net.gate_scale == pytest.approx(100.0)
    net.eval()
    discrete = net.to_discrete().eval()
    with torch.no_grad():
        assert torch.allclose(net(x), discrete(x), atol=1e-6)


def test_unknown_gate_kind_is_rejected(genome):
    with pytest.raises(ValueError, match="unknown gate kind 'soft'"):
        SuperNet(genome, gate="soft")
