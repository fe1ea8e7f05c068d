"""Operation registry: the seven defaults keep shape, and users can register their own."""

import pytest
import torch
from torch import nn

from spidernet_ray.genome import initial_genome
from spidernet_ray.ops import DEFAULT_OPS, OPS, build_op, register_op
from spidernet_ray.supernet import SuperNet


def test_the_seven_default_candidates_are_registered():
    assert len(DEFAULT_OPS) == 7
    assert set(DEFAULT_OPS) <= set(OPS)


@pytest.mark.parametrize("name", DEFAULT_OPS)
@pytest.mark.parametrize("stride, size, expected", [(1, 7, 7), (2, 8, 4), (2, 7, 4)])
def test_every_default_op_keeps_channels_and_divides_resolution_by_its_stride(name, stride, size, expected):
    op = build_op(name, 6, stride)
    out = op(torch.randn(2, 6, size, size))
    assert out.shape == (2, 6, expected, expected)


def test_unknown_op_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown operation 'nope'; known: avg_pool_3x3"):
        build_op("nope", 4, 1)


def test_a_user_registered_op_is_usable_in_a_genome():
    @register_op("conv_1x1_test")
    def conv_1x1(channels, stride):
        return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))

    try:
        genome = initial_genome((1, 8, 8), 10, reductions=1, channels=4, ops=("conv_1x1_test", "identity"))
        net = SuperNet(genome)
        assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
        assert "conv_1x1_test" in net.cells[1].edges["0_3"].ops
        with pytest.raises(ValueError, match="already registered"):
            register_op("conv_1x1_test")(conv_1x1)
    finally:
        del OPS["conv_1x1_test"]
