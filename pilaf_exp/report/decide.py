"""Statistics that end a comparison in a decision: equivalence by two one-sided tests (TOST) against a
margin, Holm's step-down correction, the power of a paired t test (noncentral t), the minimum detectable
difference at a power, the seeds a design needs, and the four-word verdict built from them.

Why: a paired interval that holds zero says "not shown", not "equal". With a margin m fixed before the
runs, a difference whose 90% interval lies inside (-m, +m) is equivalent (TOST at 5%); one that neither
excludes zero nor fits the margin is underpowered, reported with the smallest difference the design had
an 80% chance to see. numpy and math only, as `stats` (the tests compare with scipy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pilaf_exp.report.stats import LEVEL, mean_ci, t_cdf, t_quantile

POWER = 0.8
ALPHA = 1 - LEVEL  # 0.05, two-sided for better / worse, each one-sided test of TOST at it
MARGIN_SHARE = 0.05  # the equivalence margin, a share of J* - J(pi_ref) (docs/results/protocol.yaml, rule)
GRID = 4001  # points (odd) of the quadrature over the chi variable (noncentral t): error below 1e-8


def normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * np.vectorize(math.erfc)(-np.asarray(x, dtype=float) / math.sqrt(2.0))


def _chi_grid(df: float) -> tuple[np.ndarray, np.ndarray]:
    """Points s and weights w with sum w f(s) ~ E f(S), S = sqrt(V / df), V ~ chi^2_df (Simpson on
    a range holding all but ~1e-12 of the mass: S has mean ~1 and sd ~1 / sqrt(2 df))."""
    spread = 12.0 / math.sqrt(2.0 * df) + 0.5
    s = np.linspace(max(1e-9, 1.0 - spread), 1.0 + 2.0 * spread, GRID)
    # density of S: that of V = df s^2 times dV/ds = 2 df s
    log_v = np.log(df * s * s)
    log_pdf = (df / 2 - 1) * log_v - df * s * s / 2 - (df / 2) * math.log(2) - math.lgamma(df / 2)
    density = np.exp(log_pdf) * 2 * df * s
    weights = np.full(GRID, 2.0)  # Simpson's rule (GRID odd): 1, 4, 2, 4, ..., 4, 1 times h / 3
    weights[1::2], weights[[0, -1]] = 4.0, 1.0
    return s, weights * (s[1] - s[0]) / 3 * density


def noncentral_t_sf(t: float, df: float, ncp: float) -> float:
    """P(T > t) for the noncentral t with `df` degrees of freedom and noncentrality `ncp`:
    T = (Z + ncp) / S, so P(T > t) = E_S P(Z > t S - ncp)."""
    s, w = _chi_grid(df)
    return float(np.sum(w * normal_cdf(ncp - t * s)))


def paired_power(difference: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test at level `alpha` with `n` pairs, when the true mean
    difference is `difference` and the differences' sd is `sd`."""
    if n < 2 or sd <= 0:
        return math.nan
    df, ncp = n - 1, abs(difference) * math.sqrt(n) / sd
    critical = t_quantile(1 - alpha / 2, df)
    return noncentral_t_sf(critical, df, ncp) + noncentral_t_sf(critical, df, -ncp)


def minimum_detectable(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true difference the paired t test with `n` pairs detects with `power` (bisection)."""
    if n < 2 or not sd > 0:
        return math.nan
    low, high = 0.0, sd
    while paired_power(high, sd, n, alpha) < power:
        low, high = high, 2 * high
    while high - low > 1e-9 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if paired_power(middle, sd, n, alpha) < power else (low, middle)
    return high


def seeds_needed(difference: float, sd: float, power: float = POWER, alpha: float = ALPHA, cap: int = 10_000) -> int:
    """The fewest pairs (>= 2) at which the paired t test detects `difference` with `power`."""
    if not difference > 0 or not sd > 0:
        raise ValueError(f"seeds_needed wants difference > 0 and sd > 0, got {difference} and {sd}")
    n = 2
    while paired_power(difference, sd, n, alpha) < power:
        n += 1
        if n > cap:
            raise ValueError(f"more than {cap} pairs needed for difference {difference} at sd {sd}")
    return n


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests of |mean difference| < margin: p = the larger one-sided p."""

    p: float
    low: float  # the 1 - 2 alpha interval TOST reads (90% at alpha 0.05)
    high: float


def tost(differences: Sequence[float] | np.ndarray, margin: float, alpha: float = ALPHA) -> Equivalence:
    """Paired TOST: H0 mean <= -margin (p_low = P(T >= t_low)) and H0 mean >= +margin (p_high =
    P(T <= t_high)), t = (mean -+ margin) / se with n - 1 degrees of freedom."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2 or not margin > 0:
        return Equivalence(math.nan, math.nan, math.nan)
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0:
        return Equivalence(0.0 if abs(mean) < margin else 1.0, mean, mean)
    p_low = 1 - t_cdf((mean + margin) / se, n - 1)
    p_high = t_cdf((mean - margin) / se, n - 1)
    half = t_quantile(1 - alpha, n - 1) * se
    return Equivalence(max(p_low, p_high), mean - half, mean + half)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN kept as NaN, not counted among the tests)."""
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.full(len(p), math.nan)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class Decision:
    """The paired comparison's verdict word and what it rests on."""

    word: str  # better / worse / equivalent / underpowered / n/a
    mean: float
    low: float
    high: float
    n: int
    p: float  # two-sided paired t p-value
    tost_p: float
    margin: float
    mde: float  # minimum detectable difference at 80% power with these n and this sd
    tost_low: float = math.nan  # the 90% interval TOST reads: inside (-margin, +margin) when equivalent
    tost_high: float = math.nan

    def text(self, spec: str = ".3f") -> str:
        interval = f"{self.mean:+{spec}} [{self.low:+{spec}}, {self.high:+{spec}}]"
        if self.word == "equivalent":  # the 95% interval may reach past the margin; TOST's 90% one does not
            tost = f"[{self.tost_low:+{spec}}, {self.tost_high:+{spec}}]"
            return f"equivalent within ±{self.margin:{spec}} (TOST 90% interval {tost}): {interval}"
        if self.word == "underpowered":
            return f"underpowered (MDE {self.mde:{spec}}): {interval}"
        return f"{self.word}: {interval}" if self.word != "n/a" else "n/a"


def margin_of(runs) -> float:
    """The equivalence margin of a group's runs (their summaries): MARGIN_SHARE x the mean exact
    J* - J(pi_ref); NaN when the task has no exact optimum."""
    if not {"optimum/J_star", "optimum/J_ref"} <= set(runs.columns):
        return math.nan
    return MARGIN_SHARE * float((runs["optimum/J_star"] - runs["optimum/J_ref"]).mean())


def decide(differences: Sequence[float] | np.ndarray, margin: float, higher_is_better: bool = True) -> Decision:
    """Better / worse when the 95% paired t interval excludes zero; else equivalent within ±margin when
    TOST rejects at 5%; else underpowered, with the minimum detectable difference at 80% power."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    interval = mean_ci(d)
    if interval.n < 2:
        return Decision("n/a", interval.mean, math.nan, math.nan, interval.n, math.nan, math.nan, margin, math.nan)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(interval.n)
    p = 2 * (1 - t_cdf(abs(interval.mean) / se, interval.n - 1)) if se > 0 else (1.0 if interval.mean == 0 else 0.0)
    equivalence = tost(d, margin)
    if not interval.holds(0.0):
        word = "better" if (interval.mean > 0) == higher_is_better else "worse"
    elif equivalence.p < ALPHA:
        word = "equivalent"
    else:
        word = "underpowered"
    mde = minimum_detectable(sd, interval.n)
    return Decision(
        word,
        interval.mean,
        interval.low,
        interval.high,
        interval.n,
        p,
        equivalence.p,
        margin,
        mde,
        equivalence.low,
        equivalence.high,
    )


def holm_words(decisions: Sequence[Decision], higher_is_better: Sequence[bool]) -> tuple[list[str], list[float]]:
    """A family's verdict words after Holm: better / worse when the adjusted paired t p < alpha,
    equivalent when the adjusted TOST p < alpha, else underpowered (n/a without an interval); and the
    adjusted paired t p-values."""
    adjusted = holm([d.p for d in decisions])
    equivalent = holm([d.tost_p for d in decisions])
    words = []
    for decision, higher, p, p_equivalent in zip(decisions, higher_is_better, adjusted, equivalent):
        if decision.n < 2:
            words.append("n/a")
        elif p < ALPHA:
            words.append("better" if (decision.mean > 0) == higher else "worse")
        else:
            words.append("equivalent" if p_equivalent < ALPHA else "underpowered")
    return words, adjusted
