"""The report's statistics against values computed by hand and against printed t tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pilaf_exp.report.stats import (
    betainc,
    mean_ci,
    paired,
    permutation_test,
    sign_test,
    t_cdf,
    t_quantile,
    verdict,
)

# The hand-computed example: PILAF minus vanilla on five seeds.
DIFFERENCES = [0.1, 0.3, -0.1, 0.2, 0.5]


def test_t_quantiles_match_the_printed_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=5e-4)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=5e-5)
    assert t_quantile(0.975, 9) == pytest.approx(2.262, abs=5e-4)
    assert t_quantile(0.975, 29) == pytest.approx(2.045, abs=5e-4)
    assert t_quantile(0.95, 10) == pytest.approx(1.812, abs=5e-4)
    assert t_quantile(0.995, 3) == pytest.approx(5.841, abs=5e-4)
    assert t_quantile(0.975, 10_000) == pytest.approx(1.960, abs=5e-4)  # -> the normal's 1.95996
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=5e-5)  # symmetric
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_t_cdf_and_incomplete_beta_against_closed_forms():
    for t in (-3.0, -0.5, 0.0, 0.7, 2.0, 40.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    for x in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert betainc(1.0, 1.0, x) == pytest.approx(x, abs=1e-12)  # uniform
        assert betainc(3.0, 1.0, x) == pytest.approx(x**3, abs=1e-12)
        assert betainc(2.0, 2.0, x) == pytest.approx(3 * x**2 - 2 * x**3, abs=1e-12)


def test_mean_and_interval_by_hand():
    # mean = 1.0 / 5 = 0.2; deviations -0.1, 0.1, -0.3, 0, 0.3: squares sum to 0.2, variance 0.2 / 4 = 0.05,
    # sd = 0.22361, standard error = sd / sqrt(5) = sqrt(0.01) = 0.1; half-width = t_{0.975,4} x 0.1 = 0.27764:
    # [0.2 - 0.27764, 0.2 + 0.27764] = [-0.07764, 0.47764].
    interval = mean_ci(DIFFERENCES)
    assert (interval.mean, interval.n) == (pytest.approx(0.2), 5)
    assert interval.low == pytest.approx(-0.07764, abs=1e-5)
    assert interval.high == pytest.approx(0.47764, abs=1e-5)
    assert interval.holds(0.0)  # holds zero: a tie
    single = mean_ci([0.4, math.nan])  # NaN dropped; one value: no interval
    assert (single.mean, single.n) == (0.4, 1) and math.isnan(single.low) and math.isnan(single.high)
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).mean)


def test_sign_test_by_hand():
    # 4 of 5 positive: P(B <= 1) for B ~ Bin(5, 1/2) = (1 + 5) / 32, two-sided 12 / 32 = 0.375.
    assert sign_test(DIFFERENCES) == pytest.approx(0.375)
    assert sign_test([1.0] * 5) == pytest.approx(2 / 32)  # all 5 positive: 2 x 1/32
    assert sign_test([1.0, -1.0]) == 1.0  # min(1, 2 x 3/4)
    assert sign_test([0.0, 0.0, 2.0]) == 1.0  # zeros dropped: 1 of 1 positive, 2 x 1/2
    assert sign_test([]) == 1.0


def test_permutation_test_by_hand():
    # Observed sum = 1.0. Flipping a subset S of the |d| = 0.1, 0.3, 0.1, 0.2, 0.5 (total 1.2) gives
    # sum 1.2 - 2 |S|; |sum| >= 1.0 needs |S| <= 0.1 or |S| >= 1.1. |S| <= 0.1: {}, {0.1 (1st)}, {0.1 (3rd)};
    # |S| >= 1.1: their 3 complements. 6 of the 32 patterns: p = 6/32 = 0.1875.
    assert permutation_test(DIFFERENCES) == pytest.approx(6 / 32)
    assert permutation_test([1.0] * 5) == pytest.approx(2 / 32)  # only all-plus and all-minus reach |5|
    assert permutation_test([0.0, 0.0]) == 1.0


def test_permutation_test_monte_carlo_above_16_pairs():
    d = np.ones(17)  # exactly: 2 of 2^17 patterns; Monte Carlo: (1 + hits) / (1 + draws)
    p = permutation_test(d, draws=20_000)
    assert p == pytest.approx(1 / 20_001, abs=2e-4)
    rng = np.random.default_rng(3)
    noisy = rng.normal(0.0, 1.0, 20)
    assert permutation_test(noisy, draws=5_000) == permutation_test(noisy, draws=5_000)  # fixed seed
    assert 0.0 < permutation_test(noisy, draws=5_000) <= 1.0
    # The Monte Carlo estimate agrees with the exact value where both apply (16 pairs, exact enumeration).
    exact = permutation_test(noisy[:16])
    bits = np.random.default_rng(0).choice([-1.0, 1.0], size=(50_000, 16))
    estimate = (np.abs(bits @ np.abs(noisy[:16])) >= abs(noisy[:16].sum()) - 1e-12).mean()
    assert estimate == pytest.approx(exact, abs=0.01)


def test_paired_and_verdict():
    comparison = paired(DIFFERENCES + [math.nan])  # an unpaired seed (NaN) is dropped
    assert comparison.n == 5
    assert (comparison.sign_p, comparison.permutation_p) == (pytest.approx(0.375), pytest.approx(0.1875))
    assert verdict(comparison, higher_is_better=True) == "tie"  # [-0.078, 0.478] holds 0
    clear = paired([0.3, 0.4, 0.5])  # mean 0.4, se 0.0577, t_{0.975,2} = 4.303: [0.152, 0.648]
    assert clear.difference.low == pytest.approx(0.4 - 4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    assert verdict(clear, higher_is_better=True) == "better"
    assert verdict(clear, higher_is_better=False) == "worse"  # e.g. 0.4 x more annotations
    assert verdict(paired([0.3]), higher_is_better=True) == "n/a"  # one pair: no interval
