"""Small-sample statistics for the report: Student-t quantiles, 95% intervals over seeds, and paired
tests against the baseline (sign test, permutation test), with numpy and math only (no scipy).

Why these: a sweep has 3-10 seeds, so a normal interval would be too narrow (t_{0.975,2} = 4.30,
not 1.96), and runs of one seed share prompts and starting policy, so a sampler is compared with
vanilla seed by seed (paired) rather than mean against mean. The t interval assumes roughly normal
differences; the sign test and the permutation test do not, and are reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
EXACT_FLIPS_UP_TO = 16  # 2^16 = 65,536 sign patterns: enumerated; beyond, Monte Carlo
MONTE_CARLO_DRAWS = 100_000
MONTE_CARLO_SEED = 0  # fixed: the same runs always give the same p-value


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz; Numerical Recipes' betacf), which
    converges fast for x < (a + 1) / (a + b + 2)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        even = m * (b - m) * x / ((qam + 2 * m) * (a + 2 * m))
        odd = -(a + m) * (qab + m) * x / ((a + 2 * m) * (qap + 2 * m))
        for numerator in (even, odd):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    # The other side by symmetry, I_x(a, b) = 1 - I_{1-x}(b, a), where the fraction converges fast.
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom: 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on `t_cdf`, to 1e-12): t_{0.975,4} = 2.7764."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    while high - low > 1e-12 * max(1.0, high):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its two-sided t interval (NaN bounds with fewer than 2 values)."""

    mean: float
    low: float
    high: float
    n: int

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def mean_ci(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> Interval:
    """mean ± t_{(1+level)/2, n-1} sd / sqrt(n) over the non-NaN values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = t_quantile((1.0 + level) / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def sign_test(differences: Sequence[float] | np.ndarray) -> float:
    """Two-sided exact binomial sign test of median 0: zero differences dropped, p = min(1, 2 P(B <= k))
    with B ~ Binomial(n, 1/2) and k the smaller of the positive and negative counts (1 with no nonzero)."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d) & (d != 0)]
    n, positive = len(d), int((d > 0).sum())
    k = min(positive, n - positive)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def permutation_test(
    differences: Sequence[float] | np.ndarray, draws: int = MONTE_CARLO_DRAWS, seed: int = MONTE_CARLO_SEED
) -> float:
    """Two-sided paired permutation (sign-flip) test of mean 0: the share of sign patterns s whose
    |sum s_i d_i| is at least the observed |sum d_i|. Exact over all 2^n patterns for n <= 16 (the
    observed one included); above, (1 + hits) / (1 + draws) over `draws` random patterns (seeded)."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d) & (d != 0)]  # a zero difference flips to itself: it changes no sum
    if len(d) == 0:
        return 1.0
    observed, d = abs(float(d.sum())), np.abs(d)  # |d|: every sign pattern is visited either way
    slack = 1e-9 * float(d.sum())  # 0.1 + 0.2 == 0.3 up to rounding: ties count as "at least"
    if len(d) <= EXACT_FLIPS_UP_TO:
        bits = (np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1
        sums = np.abs((1 - 2 * bits) @ d)
        return float((sums >= observed - slack).mean())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(draws, len(d)))
    hits = int((np.abs(signs @ d) >= observed - slack).sum())
    return (1 + hits) / (1 + draws)


@dataclass(frozen=True)
class Paired:
    """A sampler minus the baseline, seed by seed: the mean difference, its t interval, and two p-values."""

    difference: Interval
    sign_p: float
    permutation_p: float

    @property
    def n(self) -> int:
        return self.difference.n


def paired(differences: Sequence[float] | np.ndarray) -> Paired:
    """Every paired statistic of one comparison (NaN differences, i.e. unpaired seeds, dropped)."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    return Paired(mean_ci(d), sign_test(d), permutation_test(d) if len(d) else math.nan)


def verdict(comparison: Paired, higher_is_better: bool) -> str:
    """'better' or 'worse' only when the difference's interval excludes zero; 'tie' when it holds it;
    'n/a' with fewer than 2 pairs (no interval)."""
    interval = comparison.difference
    if interval.n < 2:
        return "n/a"
    if interval.holds(0.0):
        return "tie"
    return "better" if (interval.mean > 0) == higher_is_better else "worse"
