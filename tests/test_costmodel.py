"""The run's cost model: per-op tables measured once, fitted to whole networks, estimating every round."""

import pytest

from spidernet_ray.costmodel import CostModel, calibration_genomes, measure_cost_model, op_sum
from spidernet_ray.genome import initial_genome
from spidernet_ray.hardware import count_flops, count_params
from spidernet_ray.supernet import DiscreteNet

DENSE = initial_genome((1, 8, 8), 10, reductions=1, channels=4)


@pytest.fixture(scope="module")
def model():
    return measure_cost_model(DENSE, batch_size=16, threads=1)


def test_the_model_survives_its_json_and_estimates_the_same(model):
    again = CostModel.from_json(model.to_json())
    for genome in calibration_genomes(DENSE, seed=3):
        assert again.estimate(genome) == model.estimate(genome)
    assert again.latency.measurements == 0  # every op it needed came from the stored table


def test_params_and_flops_estimates_match_the_counts_of_networks_it_never_saw(model):
    for genome in calibration_genomes(DENSE, count=6, seed=11)[1:]:
        net = DiscreteNet(genome)
        estimate = model.estimate(genome)
        assert estimate["params"] == pytest.approx(count_params(net), rel=0.03)
        assert estimate["flops"] == pytest.approx(count_flops(net, genome.input_shape), rel=0.03)


def test_the_sparsest_network_is_estimated_cheaper_than_the_dense_one_on_every_figure(model):
    dense, sparsest = calibration_genomes(DENSE)[:2]
    assert sparsest.ops_alive() < dense.ops_alive()
    cheap, costly = model.estimate(sparsest), model.estimate(dense)
    for name in ("latency_ms", "peak_memory_mb", "params", "flops"):
        assert 0 < cheap[name] < costly[name], name


def test_a_narrowed_op_costs_between_its_one_channel_and_full_widths(model):
    params = model.tables["params"]
    edge = DENSE.cells[0].edges[0]
    assert "sep_conv_3x3" in edge.ops
    narrowed = DENSE.with_widths({(0, edge.src, edge.dst, "sep_conv_3x3"): 2})
    (site, _), = [(s, w) for s, w in narrowed.op_sites() if w == 2]
    assert params(*site, width=1) < params(*site)
    saved = op_sum(DENSE, params) - op_sum(narrowed, params)
    assert 0 < saved < params(*site) - params(*site, width=1)


def test_no_fitted_cost_falls_as_a_network_grows(model):
    for coefficients in model.fits.values():
        assert all(c >= 0 for c in coefficients)
