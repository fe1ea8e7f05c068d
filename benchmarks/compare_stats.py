"""Paired statistics over seeds for benchmarks/compare.py: pure numpy, no Ray, no torch.

A comparison gives, per seed, one ratio search / baseline. Three numbers summarise them:

- the mean ratio and a 95 % percentile-bootstrap confidence interval of that mean (seeds resampled with
  replacement, a fixed generator so a rerun of the summary gives the same interval);
- the two-sided p-value of Wilcoxon's signed-rank test on the log ratios (H0: the log ratio is
  symmetric about 0, i.e. neither arm is ahead). It is computed exactly: every sign pattern of the ranks
  is equally likely under H0, and a dynamic programme over doubled ranks counts them, so tied magnitudes
  (mid-ranks) are exact too. Zeros are dropped (Wilcoxon's own rule). With n seeds the smallest p-value
  possible is 2 / 2**n: 0.0625 for 5 seeds, 0.002 for 10.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values``."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    picks = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    means = values[picks].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def midranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values``, tied values sharing the mean of their ranks."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and values[order[end + 1]] == values[order[start]]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def wilcoxon_signed_rank(differences: Sequence[float]) -> float:
    """Two-sided exact p-value of Wilcoxon's signed-rank test that ``differences`` centre on 0.

    Infinite differences are allowed (they take the largest ranks). 1.0 when nothing is left once zeros
    are dropped.
    """
    d = np.asarray([x for x in differences if x != 0], dtype=float)
    if d.size == 0:
        return 1.0
    doubled = np.rint(2 * midranks(np.abs(d))).astype(int)  # mid-ranks are halves: doubled, integers
    # counts[s]: how many of the 2**n sign patterns give the positive ranks a doubled sum of s.
    counts = np.zeros(doubled.sum() + 1)
    counts[0] = 1
    for rank in doubled:
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    observed = doubled[d > 0].sum()
    total = counts.sum()
    lower, upper = counts[:observed + 1].sum() / total, counts[observed:].sum() / total
    return float(min(1.0, 2 * min(lower, upper)))


def ratio_summary(ratios: Sequence[float | None]) -> dict:
    """``{mean, ci95_low, ci95_high, p_value, per_seed, n, of}`` of per-seed ratios search / baseline.

    ``None`` (no ratio: the baseline delivered nothing to compare with) is left out of everything. An
    infinite ratio or a zero one (the search infinitely worse or better on a figure where lower is
    better, or the reverse) enters the Wilcoxon test as the most extreme log ratio but not the mean and
    interval, which are over the finite ratios; ``n`` counts those.
    """
    present = [r for r in ratios if r is not None and not math.isnan(r)]
    finite = [r for r in present if math.isfinite(r)]
    summary = {"mean": None, "ci95_low": None, "ci95_high": None,
               "p_value": wilcoxon_signed_rank([_log(r) for r in present]) if present else None,
               "per_seed": [r if r is not None and math.isfinite(r) else None for r in ratios],
               "n": len(finite), "of": len(ratios)}
    if finite:
        summary["mean"] = float(np.mean(finite))
        summary["ci95_low"], summary["ci95_high"] = bootstrap_ci(finite)
    return summary


def _log(ratio: float) -> float:
    return -math.inf if ratio == 0 else math.log(ratio)
