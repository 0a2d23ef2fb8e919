"""The decision statistics (TOST, Holm, power, minimum detectable difference, seeds needed) against
scipy on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pilaf_exp.report.decide import (
    decide,
    holm,
    minimum_detectable,
    noncentral_t_sf,
    paired_power,
    seeds_needed,
    tost,
)

DIFFERENCES = np.array([0.12, -0.05, 0.08, 0.02, 0.10, -0.01, 0.04, 0.07, -0.03, 0.06])


def scipy_power(difference: float, sd: float, n: int, alpha: float = 0.05) -> float:
    df, ncp = n - 1, difference * math.sqrt(n) / sd
    critical = stats.t.ppf(1 - alpha / 2, df)
    return stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp)


@pytest.mark.parametrize(("t", "df", "ncp"), [(2.262, 9, 1.5), (1.0, 1, 0.3), (-0.5, 4, -2.0), (2.0, 60, 3.0)])
def test_noncentral_t_tail_matches_scipy(t, df, ncp):
    assert noncentral_t_sf(t, df, ncp) == pytest.approx(stats.nct.sf(t, df, ncp), abs=1e-6)


CASES = [(0.1, 0.253, 10), (0.1, 0.144, 10), (0.16, 0.3, 25), (0.5, 1.0, 3)]


@pytest.mark.parametrize(("difference", "sd", "n"), CASES)
def test_power_matches_scipy(difference, sd, n):
    assert paired_power(difference, sd, n) == pytest.approx(scipy_power(difference, sd, n), abs=1e-6)


def test_minimum_detectable_difference_has_the_power_it_claims():
    mde = minimum_detectable(0.253, 10)
    assert scipy_power(mde, 0.253, 10) == pytest.approx(0.8, abs=1e-6)
    assert scipy_power(0.99 * mde, 0.253, 10) < 0.8


def test_seeds_needed_is_the_first_count_with_80_percent_power():
    n = seeds_needed(0.1, 0.253)
    assert scipy_power(0.1, 0.253, n) >= 0.8 > scipy_power(0.1, 0.253, n - 1)
    assert 50 <= n <= 56  # the normal approximation said about 53
    with pytest.raises(ValueError, match="difference > 0"):
        seeds_needed(0.0, 0.2)


def test_tost_matches_two_one_sided_scipy_tests():
    margin = 0.1
    low = stats.ttest_1samp(DIFFERENCES, -margin, alternative="greater").pvalue
    high = stats.ttest_1samp(DIFFERENCES, margin, alternative="less").pvalue
    result = tost(DIFFERENCES, margin)
    assert result.p == pytest.approx(max(low, high), abs=1e-9)
    half = stats.t.ppf(0.95, 9) * stats.sem(DIFFERENCES)
    assert (result.low, result.high) == pytest.approx((DIFFERENCES.mean() - half, DIFFERENCES.mean() + half))


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    # sorted 0.005, 0.01, 0.03, 0.04 with multipliers 4, 3, 2, 1, running maximum
    expected = [0.03, 0.06, 0.06, 0.02, math.nan]
    assert holm(p)[:4] == pytest.approx(expected[:4])
    assert math.isnan(holm(p)[4])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_decide_gives_each_of_the_four_words():
    rng = np.random.default_rng(0)
    shifted = DIFFERENCES + 0.2
    assert decide(shifted, margin=0.05).word == "better"
    assert decide(-shifted, margin=0.05).word == "worse"
    assert decide(-shifted, margin=0.05, higher_is_better=False).word == "better"
    tight = rng.normal(0.0, 0.01, size=20)
    assert decide(tight, margin=0.05).word == "equivalent"
    wide = np.array([0.3, -0.4, 0.2, -0.1, 0.05])
    verdict = decide(wide, margin=0.05)
    assert verdict.word == "underpowered"
    assert verdict.mde == pytest.approx(minimum_detectable(float(wide.std(ddof=1)), 5))
    assert verdict.p == pytest.approx(stats.ttest_1samp(wide, 0.0).pvalue, abs=1e-9)
    assert "MDE" in verdict.text()


def test_an_equivalence_states_the_tost_interval_it_rests_on():
    """Few seeds: the 95% interval reaches past the margin while TOST's 90% interval lies inside it; the
    verdict's text shows both, so a reader sees why it says equivalent."""
    differences = np.array([-0.05, 0.15, 0.12, 0.04])
    verdict = decide(differences, margin=0.18)
    assert verdict.word == "equivalent" and verdict.low < 0 and verdict.high > 0.18
    assert -0.18 < verdict.tost_low < verdict.tost_high < 0.18
    assert (verdict.tost_low, verdict.tost_high) == pytest.approx(
        (tost(differences, 0.18).low, tost(differences, 0.18).high)
    )
    assert f"(TOST 90% interval [{verdict.tost_low:+.3f}, {verdict.tost_high:+.3f}])" in verdict.text()
