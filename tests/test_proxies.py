"""Specification of the train-free proxies and of choosing an edge split with them."""

import json

import pytest
import torch
from torch import nn

from spidernet_ray import proxies
from spidernet_ray.genome import initial_genome
from spidernet_ray.hardware import measure_peak_memory
from spidernet_ray.proxies import (
    KAPPA_CAP,
    ProxyScores,
    choose_split,
    linear_region_count,
    ntk_condition_number,
    rank_candidates,
    sample_splits,
    score_genome,
)
from spidernet_ray.supernet import DiscreteNet

DIGITS = (1, 8, 8)
# Small settings keep each proxy evaluation to a fraction of a second.
CHEAP = dict(channels=2, n_inits=2, ntk_samples=32, lrc_side=16)
CHEAP_SPLIT = dict(proxy_channels=2, n_inits=1, ntk_samples=32, lrc_side=16, candidates_per_cell=2)


@pytest.fixture(autouse=True)
def one_thread(torch_one_thread):
    yield


def genome(reductions=1, ops=None):
    return initial_genome(DIGITS, 10, reductions=reductions, channels=16, ops=ops)


# -- the proxies themselves ---------------------------------------------------------------------
def test_linear_regions_of_a_one_dimensional_relu_layer():
    # Units relu(x) and relu(x - 1) switch at 0 and 1: three regions along the line.
    layer = nn.Linear(1, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0], [1.0]]))
        layer.bias.copy_(torch.tensor([0.0, -1.0]))
    model = nn.Sequential(layer, nn.ReLU())
    assert linear_region_count(model, torch.linspace(-2, 3, 101).unsqueeze(1)) == 3
    assert linear_region_count(model, torch.linspace(0.2, 0.8, 11).unsqueeze(1)) == 1


def test_network_without_relus_has_one_linear_region():
    assert linear_region_count(nn.Linear(3, 2), torch.randn(50, 3)) == 1


def test_ntk_condition_number_of_a_linear_model_is_that_of_its_inputs():
    # For f(x) = w . x the gradient is x itself, so the NTK is X X^T.
    model = nn.Linear(2, 1, bias=False)
    inputs = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert ntk_condition_number(model, inputs) == pytest.approx(4.0)


def test_singular_ntk_scores_the_cap():
    model = nn.Linear(2, 1, bias=False)
    assert ntk_condition_number(model, torch.ones(3, 2)) == KAPPA_CAP


def test_proxies_are_deterministic_under_a_seed():
    first = score_genome(genome(), seed=3, **CHEAP)
    again = score_genome(genome(), seed=3, **CHEAP)
    other = score_genome(genome(), seed=4, **CHEAP)
    assert (first.kappa, first.lrc) == (again.kappa, again.lrc)
    assert other.kappa != first.kappa


def test_proxies_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    score_genome(genome(), seed=0, **CHEAP)
    assert torch.equal(torch.rand(3), expected)


def test_network_of_only_identity_and_pooling_scores_worse_on_both_proxies():
    normal = score_genome(genome(), seed=0, **CHEAP)
    degenerate = score_genome(genome(ops=("avg_pool_3x3", "identity")), seed=0, **CHEAP)
    assert degenerate.lrc < normal.lrc  # no ReLU at all: one region
    assert degenerate.kappa > normal.kappa  # few weights, all linear: singular NTK


def test_real_inputs_can_replace_noise():
    data = torch.rand(40, *DIGITS)
    first = score_genome(genome(), seed=0, inputs=data, **CHEAP)
    again = score_genome(genome(), seed=0, inputs=data, **CHEAP)
    noise = score_genome(genome(), seed=0, **CHEAP)
    assert first == ProxyScores(again.kappa, again.lrc, first.seconds)
    assert first.kappa != noise.kappa


# -- ranking and choosing -----------------------------------------------------------------------
def test_valid_candidates_keep_kappa_and_add_regions_and_best_mean_wins():
    parent = ProxyScores(kappa=10.0, lrc=100.0, seconds=0.0)
    splits = [(0, 0, 2), (0, 2, 1), (1, 0, 3), (1, 3, 2)]
    children = [
        ProxyScores(9.0, 101.0, 0.0),  # valid, small gains
        ProxyScores(12.0, 130.0, 0.0),  # conditioning worsens
        ProxyScores(8.0, 120.0, 0.0),  # valid, best on both
        ProxyScores(10.0, 99.0, 0.0),  # loses regions
    ]
    ranked = rank_candidates(splits, parent, children)
    assert [(c["cell"], c["src"], c["dst"]) for c in ranked[:2]] == [(1, 0, 3), (0, 0, 2)]
    assert [c["valid"] for c in ranked] == [True, True, False, False]
    assert [c["score"] for c in ranked[:2]] == [1.0, 0.0]
    assert ranked[0]["delta_kappa"] == -2.0 and ranked[0]["delta_lrc"] == 20.0


def test_sample_splits_draws_a_few_existing_edges_per_cell():
    g = genome(reductions=2)
    splits = sample_splits(g, per_cell=2, seed=5)
    assert splits == sample_splits(g, per_cell=2, seed=5)
    for cell in range(3):
        mine = [(s, d) for c, s, d in splits if c == cell]
        assert len(mine) == 2 and set(mine) <= set(g.candidate_splits(cell))


def test_choose_split_returns_the_winning_child_genome():
    g = genome()
    decision = choose_split(g, batch_size=8, seed=0, **CHEAP_SPLIT)
    best = max((c for c in decision.candidates if c["valid"]), key=lambda c: c["score"])
    assert len(decision.candidates) == len(sample_splits(g, 2, seed=0))
    assert decision.chosen == (best["cell"], best["src"], best["dst"])
    assert decision.child_genome == g.split_edge(*decision.chosen)
    assert decision.refused_for_budget == 0 and decision.seconds > 0
    json.dumps(decision.to_dict())


def test_split_over_the_memory_budget_is_refused_and_reported():
    g = genome()
    parent_mb, _ = measure_peak_memory(DiscreteNet(g), DIGITS, batch_size=8)
    decision = choose_split(g, batch_size=8, memory_budget_mb=parent_mb * 1.0001, seed=0, **CHEAP_SPLIT)
    valid = [c for c in decision.candidates if c["valid"]]
    assert valid, "this seed must yield valid candidates for the budget to have something to refuse"
    assert decision.chosen is None and decision.child_genome is None
    assert decision.refused_for_budget == len(valid)
    assert "break the budget" in decision.reason
    assert all(c["fits_budget"] is False and c["metrics"]["peak_memory_mb"] > parent_mb for c in valid)


def test_generous_budget_lets_the_best_valid_split_through():
    g = genome()
    decision = choose_split(g, batch_size=8, memory_budget_mb=1e6, latency_budget_ms=1e6, seed=0, **CHEAP_SPLIT)
    best = next(c for c in decision.candidates if c["valid"])
    assert decision.chosen == (best["cell"], best["src"], best["dst"])
    assert decision.refused_for_budget == 0 and best["fits_budget"]
    assert set(best["metrics"]) >= {"latency_ms", "peak_memory_mb", "memory_method"}


def test_no_valid_candidate_means_no_split(monkeypatch):
    # Every child worsens conditioning: nothing is valid, so nothing is applied.
    def worse_children(genome, splits, **settings):
        return ProxyScores(1.0, 10.0, 0.0), [ProxyScores(2.0, 20.0, 0.0) for _ in splits]

    monkeypatch.setattr(proxies, "score_splits", worse_children)
    decision = choose_split(genome(), batch_size=8, memory_budget_mb=1e6)
    assert decision.chosen is None and decision.child_genome is None
    assert decision.refused_for_budget == 0
    assert "no valid candidate" in decision.reason
    assert not any(c["valid"] for c in decision.candidates)


def test_the_config_defaults_are_the_proxies_own():
    from spidernet_ray.config import SearchConfig
    from spidernet_ray.proxies import LRC_SIDE, N_INITS, NTK_SAMPLES

    config = SearchConfig()
    assert (config.proxy_inits, config.proxy_samples, config.proxy_grid) == (N_INITS, NTK_SAMPLES, LRC_SIDE)
