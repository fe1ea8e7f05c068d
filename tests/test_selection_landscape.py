"""The selection benchmark (benchmarks/selection_landscape.py): its toy landscape, its statistics, and
the product's scheduler acting on a real local Tune population of toy members."""

import random

import numpy as np
import pytest
from ray import cloudpickle

from helpers import load_benchmark

landscape_bench = load_benchmark("selection_landscape")
# Loaded by path, the module is not importable on Ray's workers: its toy trainable travels by value.
cloudpickle.register_pickle_by_value(landscape_bench)


def test_the_landscape_knows_its_optimum_under_the_budget_and_a_mutation_moves_one_choice_one_step():
    landscape = landscape_bench.Landscape(positions=4, levels=4)
    accuracy, latency = landscape.true(landscape.all)
    assert landscape.best_under_budget == accuracy[latency <= landscape.budget].max()
    optimum = landscape.all[latency <= landscape.budget][np.argmax(accuracy[latency <= landscape.budget])]
    assert landscape.score([(list(optimum), 1.0, 0.0)])["regret"] == 0.0
    genome = [1, 2, 0, 3]
    child = landscape.mutate(genome, random.Random(0))
    assert sum(abs(a - b) for a, b in zip(genome, child)) <= 1


@pytest.mark.parametrize("seed", range(3))
def test_the_exact_wilcoxon_p_value_matches_scipy_s(seed):
    from scipy.stats import wilcoxon

    differences = np.random.default_rng(seed).normal(0.3, 1.0, 12)
    assert landscape_bench.wilcoxon_signed_rank(differences) == pytest.approx(wilcoxon(differences, method="exact").pvalue)


def test_a_population_of_four_over_six_rounds_selects_several_times(ray_local, tmp_path):
    """With quantile 0.25, each round's worst member (unless a protected fresh clone) is cloned over:
    a six-round search makes several exploits."""
    landscape = landscape_bench.Landscape(positions=4, levels=4)
    score, exploits, evaluations = landscape_bench.spidernet_arm(landscape, 4, 6, seed=0, quantile_fraction=0.25,
                                                                 storage=tmp_path)
    assert exploits >= 3
    assert evaluations >= 4 * 6 - 4  # clones resume at their donor's round count
    assert 0.0 <= score["regret"] and 0.0 < score["hypervolume"] <= 1.0
