"""Curve metrics on synthetic histories whose answers are known by construction (one curve per group:
exact or sampled, never both), and the comparison table's verdicts: better / worse only when the
Holm-adjusted paired test rejects, equivalent within the margin by TOST, underpowered otherwise."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pilaf_exp.report.curves import (
    EXACT,
    SAMPLED,
    baseline_gain,
    compare,
    comparison_cells,
    per_run,
    run_metrics,
    scale,
)
from pilaf_exp.report.decide import minimum_detectable

BUDGET = 12_800.0
STEPS = np.arange(0, 101, 10)  # evaluations every 10 steps, 128 annotations a step
SHARE = STEPS / STEPS[-1]  # x = annotations / budget at each evaluation


def run_history(sampled: np.ndarray, exact: dict[int, float] | None = None) -> pd.DataFrame:
    """One run: sampled J at every evaluation, exact J at the steps given (NaN elsewhere, as in the CSV)."""
    frame = pd.DataFrame({"step": STEPS, "annotations/total": SHARE * BUDGET, "eval/J": sampled})
    if exact is not None:
        frame["exact/J"] = [exact.get(int(step), math.nan) for step in STEPS]
    return frame


def test_linear_curves_with_exact_points():
    # Sampled J = 0.2 + 0.6 x, exact J = 0.1 + x at steps 0, 50, 100 (two different lines, to tell
    # which one each metric reads): with 3 exact points every metric reads the exact line. G = 1.0.
    run = run_history(0.2 + 0.6 * SHARE, exact={0: 0.1, 50: 0.6, 100: 1.1})
    metrics = run_metrics(run, gain=1.0)
    assert metrics["budget"] == BUDGET
    for share, expected in [(25, 0.35), (50, 0.6), (75, 0.85)]:
        assert metrics[f"J @ {share}% budget"] == pytest.approx(expected)
    # J at 100% repeats the final table, the area is a combination of the same points: neither is here.
    assert {"J @ 100% budget", "J AUC", "J last 10%"}.isdisjoint(metrics)
    # Targets 0.35, 0.6, 0.85 from the exact start 0.1, crossed on the exact line at x = 1/4, 1/2, 3/4
    # (the sampled line would reach 0.6 only at x = 2/3: a mixed scale would say 8,533).
    for share in (25, 50, 75):
        assert metrics[f"annotations to {share}% gain"] == pytest.approx(BUDGET * share / 100)


def test_sampled_curve_when_no_exact_evaluation():
    metrics = run_metrics(run_history(0.2 + 0.6 * SHARE), gain=1.0)
    for share in (25, 50, 75):
        assert metrics[f"J @ {share}% budget"] == pytest.approx(0.2 + 0.6 * share / 100)
    # Start = sampled 0.2: targets 0.45 (x = 5/12), 0.7 (x = 5/6), 0.95 (x = 5/4: never).
    assert metrics["annotations to 25% gain"] == pytest.approx(BUDGET * 5 / 12)
    assert metrics["annotations to 50% gain"] == pytest.approx(BUDGET * 5 / 6)
    assert math.isnan(metrics["annotations to 75% gain"])
    assert "annotations to 25% gain" not in run_metrics(run_history(0.2 + 0.6 * SHARE), gain=0.0)  # no gain


def test_concave_exact_curve_interpolation():
    # Exact 0, 0.75, 1.0 at x = 0, 1/2, 1: J @ 25% = 0.375, @ 75% = 0.875.
    metrics = run_metrics(run_history(np.zeros(len(STEPS)), exact={0: 0.0, 50: 0.75, 100: 1.0}), gain=1.0)
    assert metrics["J @ 25% budget"] == pytest.approx(0.375)
    assert metrics["J @ 75% budget"] == pytest.approx(0.875)
    # Only the first and last exact points (the sweeps' default schedule): a straight line between them
    # says nothing of the curve, so every metric comes from the (here flat, zero) sampled curve.
    two = run_metrics(run_history(np.zeros(len(STEPS)), exact={0: 0.0, 100: 1.0}), gain=1.0)
    assert two["J @ 25% budget"] == pytest.approx(0.0)
    assert math.isnan(two["annotations to 25% gain"])


def test_a_group_reads_one_scale_for_every_run():
    three = tagged(run_history(0.2 + 0.6 * SHARE, exact={0: 0.1, 50: 0.6, 100: 1.1}), "vanilla", 0)
    two = tagged(run_history(0.2 + 0.6 * SHARE, exact={0: 0.1, 100: 1.1}), "pilaf", 0)
    assert scale(three) == EXACT
    assert scale(pd.concat([three, two])) == SAMPLED  # one run short of exact points: all sampled
    table = per_run(pd.concat([three, two])).set_index("sampler")
    assert table.loc["vanilla", "J @ 50% budget"] == pytest.approx(0.5)  # the sampled line, not the exact 0.6


def tagged(history: pd.DataFrame, sampler: str, seed: int, run_dir: str = "") -> pd.DataFrame:
    return history.assign(sampler=sampler, seed=seed, run_dir=run_dir or f"{sampler}/{seed}")


def test_vanilla_final_gain_and_per_run_table():
    # Exact curves (3 points each). Vanilla seed 0 gains 1.0 (0.1 -> 1.1); seed 1 has two runs gaining 0.4
    # and 0.8 (averaged: 0.6). G = mean(1.0, 0.6) = 0.8; pilaf's exact 0.1, 0.3, 0.8 reaches 0.1 + 0.2 at x = 1/2.
    history = pd.concat(
        [
            tagged(run_history(0.1 + SHARE, exact={0: 0.1, 50: 0.6, 100: 1.1}), "vanilla", 0),
            tagged(run_history(0.1 + SHARE, exact={0: 0.1, 50: 0.3, 100: 0.5}), "vanilla", 1, "a"),
            tagged(run_history(0.1 + SHARE, exact={0: 0.1, 50: 0.5, 100: 0.9}), "vanilla", 1, "b"),
            tagged(run_history(0.2 + 0.6 * SHARE, exact={0: 0.1, 50: 0.3, 100: 0.8}), "pilaf", 0),
        ]
    )
    assert baseline_gain(history) == pytest.approx(0.8)
    table = per_run(history).set_index("run_dir")
    assert len(table) == 4
    assert table.loc["pilaf/0", "annotations to 25% gain"] == pytest.approx(BUDGET / 2)
    assert math.isnan(baseline_gain(history[history["sampler"] == "pilaf"]))  # no vanilla: no target


def runs_table(metric: str, values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"sampler": s, "seed": seed, "run_dir": f"{s}/{seed}", metric: v}
            for s, vs in values.items()
            for seed, v in enumerate(vs)
        ]
    )


def cell(cells: pd.DataFrame, metric: str, sampler: str, column: str) -> str:
    rows = cells.loc[[metric]]
    return rows[rows["sampler"] == sampler][column].item()


def test_words_after_holm_underpowered_better_worse_and_equivalent():
    vanilla = [1.0, 1.1, 0.9, 1.0, 1.2]
    ahead = [0.1, 0.3, -0.1, 0.2, 0.5]  # mean 0.2, CI [-0.0776, 0.4776]: holds 0
    pilaf_unclear = list(np.add(vanilla, ahead))
    pilaf_win = list(np.add(vanilla, [0.3, 0.4, 0.5, 0.4, 0.4]))  # mean 0.4, every seed ahead
    hybrid_loss = list(np.subtract(vanilla, [0.3, 0.4, 0.5, 0.4, 0.4]))
    runs = pd.concat(
        [
            runs_table("J @ 25% budget", {"vanilla": vanilla, "pilaf": pilaf_unclear}),
            runs_table("J @ 75% budget", {"vanilla": vanilla, "pilaf": pilaf_win, "hybrid": hybrid_loss}),
        ]
    )
    table = compare(runs, margin=0.05)
    unclear = table[(table["metric"] == "J @ 25% budget") & (table["sampler"] == "pilaf")].iloc[0]
    assert unclear["verdict"] == "underpowered" and unclear["diff ci low"] < 0 < unclear["diff ci high"]
    assert unclear["mde"] == pytest.approx(minimum_detectable(float(np.std(ahead, ddof=1)), 5))
    assert (unclear["sign p"], unclear["permutation p"]) == (pytest.approx(0.375), pytest.approx(0.1875))
    cells = comparison_cells(table)
    text = cell(cells, "J @ 25% budget", "pilaf", "Δ vs vanilla [95% CI]")
    assert text.startswith("underpowered (MDE ") and text.endswith(": +0.2000 [-0.0776, +0.4776]")
    assert cell(cells, "J @ 25% budget", "pilaf", "pairs") == "5/5"
    win = cell(cells, "J @ 75% budget", "pilaf", "Δ vs vanilla [95% CI]")
    assert win.startswith("**+0.4000 [") and win.endswith(" ▲**")
    loss = cell(cells, "J @ 75% budget", "hybrid", "Δ vs vanilla [95% CI]")
    assert loss.startswith("-0.4000 [") and loss.endswith(" ▼") and "**" not in loss  # a loss is not bold
    assert cell(cells, "J @ 75% budget", "vanilla", "Δ vs vanilla [95% CI]") == "—"  # the baseline itself
    assert list(cells.loc[["J @ 75% budget"], "sampler"]) == ["vanilla", "hybrid", "pilaf"]  # the paper's order
    # Holm: three tests; the smallest raw p is multiplied by 3.
    assert table["holm p"].dropna().min() == pytest.approx(3 * table["t p"].dropna().min())
    assert table.loc[table["sampler"] == "pilaf", "holm p"].max() == pytest.approx(unclear["t p"])  # the largest: x1
    # Equivalence: every seed within 0.01 of vanilla, margin 0.05.
    close = list(np.add(vanilla, [0.004, -0.003, 0.002, -0.001, 0.003]))
    same = compare(runs_table("J @ 50% budget", {"vanilla": vanilla, "pilaf": close}), margin=0.05)
    assert same.loc[same["sampler"] == "pilaf", "verdict"].item() == "equivalent"
    assert "equivalent within ±0.0500" in comparison_cells(same).iloc[1]["Δ vs vanilla [95% CI]"]


def test_fewer_annotations_is_a_win_and_only_seeds_both_reached_are_paired():
    vanilla = [1000.0, 1200.0, 900.0, 1100.0, math.nan]  # seed 4: vanilla never reached
    pilaf = [800.0, 1000.0, 750.0, math.nan, 700.0]  # seed 3: pilaf never reached
    table = compare(runs_table("annotations to 50% gain", {"vanilla": vanilla, "pilaf": pilaf}))
    row = table[table["sampler"] == "pilaf"].iloc[0]
    # Paired on seeds 0-2 only: differences -200, -200, -150 (mean -183.3), all fewer annotations.
    assert (row["pairs"], row["seeds in common"]) == (3, 5)
    assert row["diff mean"] == pytest.approx(-550 / 3)
    assert row["verdict"] == "better"  # lower is better for annotations
    cells = comparison_cells(table)
    assert cell(cells, "annotations to 50% gain", "pilaf", "pairs") == "3/5"
    assert cell(cells, "annotations to 50% gain", "pilaf", "mean [95% CI]").endswith("(not reached in 1/5 seeds)")
    assert cell(cells, "annotations to 50% gain", "pilaf", "Δ vs vanilla [95% CI]").startswith("**-183 [")


def test_iterative_rounds_start_at_zero_annotations_and_cross_at_a_round():
    # Iterative DPO evaluates the starting policy after labelling round 1: steps 0-20 all at 100 annotations,
    # round 2 brings 200. The start (J 0.0) sits at 0 annotations, the round's last evaluation (J 0.4) at 100.
    run = pd.DataFrame(
        {
            "step": [0, 10, 20, 30, 40],
            "annotations/total": [100.0, 100.0, 100.0, 200.0, 200.0],
            "eval/J": [0.0, 0.2, 0.4, 0.6, 0.8],
        }
    )
    metrics = run_metrics(run, gain=1.0)
    assert metrics["J @ 25% budget"] == pytest.approx(0.2)  # 50 annotations: halfway from (0, 0.0) to (100, 0.4)
    assert metrics["J @ 75% budget"] == pytest.approx(0.6)  # 150: halfway from (100, 0.4) to (200, 0.8)
    # J 0.25 is first reached within round 1, which needed all its 100 annotations before any training.
    assert metrics["annotations to 25% gain"] == pytest.approx(100.0)
