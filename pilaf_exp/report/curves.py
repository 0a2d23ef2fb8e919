"""Curves, not endpoints: each run's whole J-vs-annotations curve reduced to a few numbers, and every
sampler compared with vanilla seed by seed (runs of one seed share prompts and starting policy).

One scale per table: a group's curves are read from the exact evaluations (`exact/J`, enumerated, no
sampling noise) when every run has >= 3 of them (`eval.exact_every` set), else from the sampled ones
(`eval/J`) for every run; the caption names which. Every metric below reads that one curve. Per run
(one directory), with budget = its final `annotations/total`:
- "J @ q%": J at q x budget (q = 25, 50, 75%), interpolated linearly in annotations between the curve's
  evaluations. J at 100% is the final table's column and is not repeated here; the area under the
  curve, a fixed linear combination of the same points, is not reported either.
- "annotations to q% gain": where the curve first reaches J_0 + q G (linear interpolation between the
  evaluations as they are, `efficiency.annotations_to_reach`), J_0 = the run's step-0 J and G =
  vanilla's final gain = mean over vanilla's seeds of final J - step-0 J, all on the same curve;
  NaN = not reached. Omitted when G <= 0 (a share of no gain means nothing).
The curve for "J @ q%" starts at (0 annotations, step-0 J): the starting policy needs no annotations,
although iterative DPO evaluates it after labelling round 1; an annotation count shared by several
evaluations (a round's training) keeps the latest, the J those annotations bought, so rounds are joined
by straight lines. The crossing instead reads the evaluations as they are: a target met during round
1's training costs round 1's whole count. Where a sampler and seed have several runs (a re-run in the
same tree), their metrics are averaged before pairing. Every comparison here is secondary: its verdict
word is read from Holm-adjusted p-values over the whole table (`decide.holm_words`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pilaf_exp.infra.cli import BASELINE_SAMPLER, sampler_order
from pilaf_exp.infra.names import ANNOTATIONS, EVAL_J, EXACT_J
from pilaf_exp.report.decide import decide, holm_words
from pilaf_exp.report.efficiency import annotations_to_reach
from pilaf_exp.report.runs import runs_of
from pilaf_exp.report.stats import Interval, Paired, mean_ci, paired, verdict

SAMPLED, EXACT = EVAL_J, EXACT_J
# A curve read from exact points needs one between the first and the last: with those two alone (the
# sweeps' default schedule, eval.exact_every: null) the sampled curve is the better account.
MIN_EXACT_POINTS = 3
BUDGET_SHARES = (0.25, 0.5, 0.75)
GAIN_SHARES = (0.25, 0.5, 0.75)
MARKERS = {"better": "▲", "worse": "▼"}


def j_at_share(share: float) -> str:
    return f"J @ {100 * share:.0f}% budget"


def to_gain(share: float) -> str:
    return f"annotations to {100 * share:.0f}% gain"


# metric -> higher is better, in the table's order: J up, annotations needed down.
DIRECTIONS = {j_at_share(s): True for s in BUDGET_SHARES} | {to_gain(s): False for s in GAIN_SHARES}


def points(run: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(annotations, J) of the evaluations that have `column`, by step. The step-0 evaluation sits at 0
    annotations (the starting policy needs none; iterative DPO evaluates it after labelling round 1),
    and a count shared by several evaluations keeps the latest."""
    if column not in run:
        return np.empty(0), np.empty(0)
    rows = run.dropna(subset=[column, ANNOTATIONS]).sort_values("step")
    rows = rows.assign(**{ANNOTATIONS: rows[ANNOTATIONS].where(rows["step"] != 0, 0.0)})
    rows = rows.drop_duplicates(subset=ANNOTATIONS, keep="last")
    return rows[ANNOTATIONS].to_numpy(float), rows[column].to_numpy(float)


def scale(history: pd.DataFrame, min_exact: int = MIN_EXACT_POINTS) -> str:
    """The group's one curve column: exact when every run has at least `min_exact` exact points, else sampled."""
    if EXACT not in history or history.empty:
        return SAMPLED
    keys = [c for c in ("sampler", "seed", "run_dir") if c in history]
    counts = history.groupby(keys)[EXACT].count() if keys else pd.Series([history[EXACT].count()])
    return EXACT if counts.min() >= min_exact else SAMPLED


def curve(run: pd.DataFrame, column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The run's curve on `column` (default: the run's own scale, as `scale` reads a group)."""
    return points(run, column or scale(run))


def endpoints(run: pd.DataFrame, column: str | None = None) -> tuple[float, float]:
    """(first, last) evaluated J by step (step 0 and the final step) on `column` (default: `scale`)."""
    column = column or scale(run)
    j = run.sort_values("step")[column].dropna() if column in run else pd.Series(dtype=float)
    return (float(j.iloc[0]), float(j.iloc[-1])) if len(j) else (math.nan, math.nan)


def baseline_gain(history: pd.DataFrame, baseline: str = BASELINE_SAMPLER) -> float:
    """Vanilla's final gain on the group's scale: mean over its seeds (re-runs of a seed averaged) of
    final J - step-0 J."""
    gains, column = {}, scale(history)
    for key, rows in runs_of(history):
        if key["sampler"] == baseline:
            start, end = endpoints(rows, column)
            gains.setdefault(key["seed"], []).append(end - start)
    return float(np.mean([np.mean(g) for g in gains.values()])) if gains else math.nan


def run_metrics(run: pd.DataFrame, gain: float, column: str | None = None) -> dict[str, float]:
    """Every curve metric of one run (module docstring) on `column` (default: the run's own `scale`);
    `gain` = vanilla's final gain on the same scale."""
    column = column or scale(run)
    budget = float(run[ANNOTATIONS].max())
    x, y = curve(run, column)
    metrics = {"budget": budget}
    metrics |= {j_at_share(s): float(np.interp(s * budget, x, y)) if len(x) else math.nan for s in BUDGET_SHARES}
    if gain > 0:
        start = endpoints(run, column)[0]
        metrics |= {to_gain(s): annotations_to_reach(run, start + s * gain, column) for s in GAIN_SHARES}
    return metrics


def per_run(history: pd.DataFrame) -> pd.DataFrame:
    """One row per run: sampler, seed, run_dir and its curve metrics, all on the group's `scale`."""
    gain, column = baseline_gain(history), scale(history)
    rows = [key | run_metrics(rows, gain, column) for key, rows in runs_of(history)]
    return pd.DataFrame(rows)


def compare(runs: pd.DataFrame, baseline: str = BASELINE_SAMPLER, margin: float = math.nan) -> pd.DataFrame:
    """Long table, one row per (metric, sampler): mean and 95% t interval over seeds, and the paired
    comparison with the baseline over the seeds where both have a value (for annotations to reach:
    the seeds where both reached). Verdict words from Holm-adjusted p over every comparison of the
    table; `margin` (J units) is the equivalence margin of the J metrics (none for annotations)."""
    by_seed = runs.groupby(["sampler", "seed"]).mean(numeric_only=True)
    ran = {name: set(seeds) for name, seeds in by_seed.reset_index().groupby("sampler")["seed"]}
    rows = []
    for metric, higher in DIRECTIONS.items():
        if metric not in by_seed:
            continue
        table = by_seed[metric].unstack("sampler")  # seed x sampler, NaN = no run or not reached
        for sampler in sampler_order(table.columns):
            i = mean_ci(table[sampler])
            row = {
                "metric": metric,
                "sampler": sampler,
                "higher is better": higher,
                "mean": i.mean,
                "ci low": i.low,
                "ci high": i.high,
                "n": i.n,
                "seeds": len(ran[sampler]),
            }
            if sampler != baseline and baseline in table:
                both = table[[sampler, baseline]].dropna()
                common = len(ran[sampler] & ran[baseline])
                d = both[sampler] - both[baseline]
                row |= difference_columns(paired(d), higher) | {"seeds in common": common}
                row["decision"] = decide(d, margin if metric.startswith("J") else math.nan, higher)
            rows.append(row)
    table = pd.DataFrame(rows)
    if "decision" in table:
        tested = table["decision"].notna()
        decisions = list(table.loc[tested, "decision"])
        words, adjusted = holm_words(decisions, list(table.loc[tested, "higher is better"]))
        table.loc[tested, "verdict"], table.loc[tested, "holm p"] = words, adjusted
        table.loc[tested, "t p"] = [d.p for d in decisions]
        table.loc[tested, "mde"] = [d.mde for d in decisions]
        table.loc[tested, "margin"] = [d.margin for d in decisions]
        table = table.drop(columns="decision")
    counts = [c for c in ("pairs", "seeds in common") if c in table]
    return table.astype({c: "Int64" for c in counts})  # whole numbers, <NA> on the baseline's rows


def difference_columns(test: Paired, higher: bool) -> dict:
    d = test.difference
    return {
        "diff mean": d.mean,
        "diff ci low": d.low,
        "diff ci high": d.high,
        "pairs": d.n,
        "sign p": test.sign_p,
        "permutation p": test.permutation_p,
        "verdict": verdict(test, higher),
    }


def interval_text(interval: Interval, spec: str, sign: str = "") -> str:
    """'mean [low, high]' with the format spec (e.g. '.3f'); the mean alone without an interval; — without values."""
    if pd.isna(interval.mean):
        return "—"
    number = "{:" + sign + spec + "}"
    text = number.format(interval.mean)
    return text if pd.isna(interval.low) else f"{text} [{number.format(interval.low)}, {number.format(interval.high)}]"


def difference_text(row: pd.Series, spec: str, bold: str = "**{}**") -> str:
    """A win or loss (▲ better / ▼ worse than the baseline) only when the paired interval excludes 0;
    else 'tie' and the interval, which holds 0. — for the baseline itself or without pairs."""
    if pd.isna(row.get("verdict")) or pd.isna(row["pairs"]) or row["pairs"] == 0:
        return "—"
    interval = Interval(row["diff mean"], row["diff ci low"], row["diff ci high"], int(row["pairs"]))
    text = interval_text(interval, spec, sign="+")
    if row["verdict"] == "tie":
        return f"tie: {text}"
    if row["verdict"] == "equivalent":
        return f"equivalent within ±{row['margin']:{spec.lstrip(',')}}: {text}"
    if row["verdict"] == "underpowered":
        return f"underpowered (MDE {row['mde']:{spec}}): {text}"
    if row["verdict"] == "n/a":
        return f"{text} (1 pair: no interval)"
    marked = f"{text} {MARKERS[row['verdict']]}"
    return bold.format(marked) if row["verdict"] == "better" else marked


def spec_of(metric: str) -> str:
    return ",.0f" if metric.startswith("annotations") else ".4f"


def comparison_cells(table: pd.DataFrame, baseline: str = BASELINE_SAMPLER) -> pd.DataFrame:
    """Display strings of `compare`'s table, indexed by metric (one row per metric and sampler)."""
    cells = []
    for _, row in table.iterrows():
        spec = spec_of(row["metric"])
        value = interval_text(Interval(row["mean"], row["ci low"], row["ci high"], int(row["n"])), spec)
        if row["metric"].startswith("annotations") and row["n"] < row["seeds"]:
            value += f" (not reached in {row['seeds'] - row['n']}/{row['seeds']} seeds)"
        pairs = "—" if pd.isna(row.get("pairs")) else f"{row['pairs']:.0f}/{row['seeds in common']:.0f}"
        cells.append(
            {
                "metric": row["metric"],
                "sampler": row["sampler"],
                "mean [95% CI]": value,
                f"Δ vs {baseline} [95% CI]": difference_text(row, spec),
                "pairs": pairs,
                "Holm p": p_text(row.get("holm p")),
                "sign p": p_text(row.get("sign p")),
                "permutation p": p_text(row.get("permutation p")),
            }
        )
    return pd.DataFrame(cells).set_index("metric")


def p_text(p: float | None) -> str:
    return "—" if p is None or pd.isna(p) else f"{p:.3g}"


def caption(gain: float, column: str = EXACT, baseline: str = BASELINE_SAMPLER) -> str:
    what = "exact (enumerated)" if column == EXACT else "sampled (256 test prompts)"
    target = "not defined: no baseline runs" if pd.isna(gain) else f"G = {gain:.4f}"
    return (
        f"Secondary, exploratory. Every number from the {what} J curve of each run: J at 25/50/75% of the "
        f"annotation budget, interpolated linearly between that curve's evaluations (J at 100% is the final "
        f"table's); annotations (responses labelled) at which that curve first reaches 25/50/75% of "
        f"{baseline}'s final gain over the starting J, on the same curve ({target}). Mean [95% t interval] over "
        f"seeds; Δ = sampler - {baseline}, paired by seed (for annotations, over the seeds where both reached: "
        f"'pairs' = paired / common seeds). Words from Holm-adjusted paired t p-values over every comparison in "
        f"this table: better / worse (▲ / ▼, bold = better) when Holm p < 0.05; equivalent within ±m (J only; "
        f"Holm-adjusted TOST); else underpowered, with the minimum difference detectable at 80% power. Sign and "
        f"permutation p: two-sided, unadjusted.\n\n"
    )
