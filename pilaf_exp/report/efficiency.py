"""Annotation efficiency: how many annotations each sampler needs to reach vanilla's final J.

The target is vanilla's final J (its last evaluation), mean over vanilla's seeds. For every run,
"annotations to reach" is the number of annotations at which J first reaches the target,
linearly interpolated between the two evaluations that bracket the first crossing (evaluations
are spaced, so the first evaluation at or above the target over-counts by up to one evaluation
interval). A run whose J never reaches the target is "not reached" (NaN). Per sampler: mean and
std over the seeds that reached it, how many did, and the ratio to vanilla's mean.

The x axis is the J-vs-annotations plot's: `annotations/total`, responses labelled (2 per pair);
ratios are the same counted in pairs. Online DPO labels a batch every step, so counts grow
evenly between evaluations; iterative DPO labels a round at once, so a crossing interpolated
between two rounds' evaluations falls between their budgets. The mean is over the seeds that
reached the target only, so read it with 'reached': a sampler that rarely gets there looks cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pilaf_exp.infra.cli import BASELINE_SAMPLER
from pilaf_exp.infra.names import ANNOTATIONS, EVAL_J
from pilaf_exp.report.runs import runs_of

# Relative slack on the target: the mean of equal floats can exceed them by an ulp (three seeds
# all ending at J = 0.1 average to 0.1 + 1e-17), and vanilla's best seed must still reach it.
TOLERANCE = 1e-12


@dataclass
class Efficiency:
    baseline: str
    target: float  # vanilla's final J, mean over its seeds
    per_seed: pd.DataFrame  # one row per run: sampler, seed, final J, budget, annotations (NaN = not reached)
    summary: pd.DataFrame  # one row per sampler (index)


def annotations_to_reach(run: pd.DataFrame, target: float, column: str = EVAL_J) -> float:
    """Annotations at which this run's J (`column`: sampled `eval/J` or exact `exact/J`) first reaches
    `target`, interpolated linearly between the last evaluation below it and the first at or above it;
    NaN if it never does. The first crossing counts even if J falls back below the target later (the
    budget it took to get there)."""
    rows = run.dropna(subset=[column, ANNOTATIONS]).sort_values("step")
    j, annotations = rows[column].to_numpy(float), rows[ANNOTATIONS].to_numpy(float)
    hits = np.flatnonzero(j >= target - TOLERANCE * max(1.0, abs(target)))
    if hits.size == 0:
        return float("nan")
    i = hits[0]
    if i == 0:  # already there at the first evaluation: nothing to interpolate from
        return float(annotations[0])
    # j[i-1] < target <= j[i] (up to the tolerance), so the fraction is in [0, 1]; clip for the slack.
    fraction = min(1.0, (target - j[i - 1]) / (j[i] - j[i - 1]))
    return float(annotations[i - 1] + fraction * (annotations[i] - annotations[i - 1]))


def annotation_efficiency(
    history: pd.DataFrame, baseline: str = BASELINE_SAMPLER, column: str = EVAL_J
) -> Efficiency | None:
    """From one experiment group's evaluation histories (`report.load_runs`): the annotations each
    run needs to reach the baseline's final J, and per sampler their mean ± std over the seeds that
    reached it, 'reached' of 'seeds', and the ratio to the baseline's mean over the seeds where both
    reached ('ratio', 'paired'; 'saved %' = 100 (1 - ratio)). Target and crossings read one curve,
    `column` (exact `exact/J` or sampled `eval/J`). The baseline's own seeds are treated like any other:
    those whose J never reaches the mean of the baseline's final J are not reached (the best one
    always is). None when the group has no baseline runs or no annotation counts."""
    if history.empty or ANNOTATIONS not in history or baseline not in set(history["sampler"]):
        return None
    runs = list(runs_of(history))
    # The last J on `column`: an evaluation row may carry the other scale only (NaN here).
    finals = [rows[column].dropna().iloc[-1] for key, rows in runs if key["sampler"] == baseline]
    target = float(np.mean(finals))
    per_seed = pd.DataFrame(
        [
            {
                "sampler": key["sampler"],
                "seed": key["seed"],
                "final J": float(rows[column].dropna().iloc[-1]),
                "budget": float(rows[ANNOTATIONS].iloc[-1]),
                "annotations": annotations_to_reach(rows, target, column),
            }
            for key, rows in runs
        ]
    )
    grouped = per_seed.groupby("sampler")
    summary = pd.DataFrame(
        {
            "annotations mean": grouped["annotations"].mean(),  # NaN (not reached) skipped
            "annotations std": grouped["annotations"].std(),  # NaN with fewer than 2 reached
            "reached": grouped["annotations"].count(),
            "seeds": grouped.size(),
            "budget": grouped["budget"].mean(),
        }
    )
    by_seed = per_seed.groupby(["sampler", "seed"])["annotations"].mean().unstack("sampler")  # seed x sampler
    both = {name: by_seed[list(dict.fromkeys([name, baseline]))].dropna() for name in summary.index}
    summary["paired"] = [len(both[name]) for name in summary.index]
    summary["ratio"] = [b[name].mean() / b[baseline].mean() if len(b) else np.nan for name, b in both.items()]
    summary["saved %"] = 100 * (1 - summary["ratio"])
    summary["target J"] = target
    summary["scale"] = "exact" if column.startswith("exact/") else "sampled"
    return Efficiency(baseline=baseline, target=target, per_seed=per_seed, summary=summary)


def count(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:,.0f}"


def efficiency_cells(efficiency: Efficiency) -> pd.DataFrame:
    """Display strings per sampler, including every seed's count (— = not reached) for the spread."""
    summary, cells = efficiency.summary, pd.DataFrame(index=efficiency.summary.index)
    mean, std = summary["annotations mean"], summary["annotations std"]
    cells["annotations to reach"] = [count(m) + ("" if pd.isna(s) else f" ± {s:,.0f}") for m, s in zip(mean, std)]
    cells["reached"] = [f"{r}/{n}" for r, n in zip(summary["reached"], summary["seeds"])]
    cells[f"vs {efficiency.baseline} (paired)"] = [
        "—" if pd.isna(r) else f"{r:.2f}x ({n} seed{'s' * (n != 1)})"
        for r, n in zip(summary["ratio"], summary["paired"])
    ]
    cells["saved %"] = summary["saved %"].map(lambda s: "—" if pd.isna(s) else f"{s:.1f}")
    cells["budget"] = summary["budget"].map(count)
    per_seed = efficiency.per_seed.sort_values("seed").groupby("sampler")
    cells["per seed"] = [
        " · ".join(f"s{seed} {count(a)}" for seed, a in zip(rows["seed"], rows["annotations"]))
        for rows in map(per_seed.get_group, summary.index)
    ]
    return cells


def caption(efficiency: Efficiency) -> str:
    seeds = efficiency.summary.loc[efficiency.baseline, "seeds"]
    scale = efficiency.summary["scale"].iloc[0]
    what = "exact (enumerated)" if scale == "exact" else "sampled (256 test prompts)"
    return (
        f"Secondary, exploratory; no test. Target and crossings on the {what} J curve: {efficiency.baseline}'s "
        f"final {scale} J, mean over its {seeds} seeds = {efficiency.target:.3f}. Annotations (responses labelled, "
        "2 per pair) at which that J first reaches it, linearly interpolated between evaluations; mean ± std over "
        "the seeds that reached it (— = never reached); the ratio to vanilla is over the seeds where both reached; "
        "budget = annotations of the whole run.\n\n"
    )
