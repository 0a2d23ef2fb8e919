"""docs/results/regimes.md: the regime map's table, figure, the theorem's quantities at trained policies and
what the map says, from `regimes.CellResult`s (`python -m pilaf_exp.results.regimes` writes it)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pilaf_exp.report.markdown import markdown  # noqa: E402
from pilaf_exp.results.regime_cells import CellResult, agreement  # noqa: E402

FIGURE = "regimes/regimes.png"  # relative to the page
THEORY_COLUMNS = {  # the theorem's quantities shown (checkpoint_theory's names -> the page's)
    "sd r_theta": "sd r_theta",
    "sd r* - r_theta": "sd r* - r_theta",
    "Z+ Z-": "Z+ Z-",
    "t_pilaf_half - vanilla predicted": "T-PILAF - vanilla, predicted",
    "t_pilaf_half - vanilla measured": "T-PILAF - vanilla, measured",
    "t_pilaf_exact - vanilla measured": "exact-share T-PILAF - vanilla, measured",
    "vanilla measured (params)": "vanilla (params)",
    "t_pilaf_half - vanilla measured (params)": "T-PILAF - vanilla (params)",
    "t_pilaf_exact - vanilla measured (params)": "exact-share T-PILAF - vanilla (params)",
    "support mass": "support mass",
}


def cell_table(results: list[CellResult]) -> str:
    rows = []
    for r in results:
        d = r.decision
        rows.append(
            {
                "cell": r.cell.name + (" (earlier claim's runs)" if r.cell.kept else ""),
                "knobs": r.cell.knobs(),
                "theory predicts": (r.cell.prediction or "—")
                + ("" if math.isnan(r.cell.predicted_gap) else f" ({r.cell.predicted_gap:.4f})"),
                "J* - J(pi_ref)": f"{r.gain:.3f}",
                "vanilla's area": f"{r.vanilla:.3f}",
                "vanilla's final J, share of the gain": f"{r.reached:.0%}",
                "PILAF - vanilla (area), verdict": d.text(),
                "after Holm over the new cells": r.holm or "—",
                "seeds": d.n,
                "agreement": agreement(r.cell.prediction, r.decision.word),
            }
        )
    return markdown(pd.DataFrame(rows).set_index("cell"))


def figure(results: list[CellResult], path: Path) -> None:
    """Per cell the paired difference as a share of the cell's J* - J(pi_ref), its 95% interval, and the
    margin band (+-5% of the same gain): one scale for every cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    colours = {"advantage": "tab:green", "tie": "tab:grey", "": "tab:blue"}
    for x, r in enumerate(results):
        d, g = r.decision, r.gain
        ax.errorbar(
            x,
            d.mean / g,
            yerr=[[(d.mean - d.low) / g], [(d.high - d.mean) / g]],
            fmt="o",
            capsize=4,
            color=colours[r.cell.prediction],
        )
        ax.plot([x - 0.3, x + 0.3], [d.margin / g] * 2, color="k", lw=0.8, ls=":")
        ax.plot([x - 0.3, x + 0.3], [-d.margin / g] * 2, color="k", lw=0.8, ls=":")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xticks(range(len(results)), [r.cell.name for r in results], rotation=20)
    ax.set_ylabel("PILAF - vanilla, exact-J area\n(share of J* - J(pi_ref))")
    ax.set_title(
        "Paired by seed, 95% interval; dotted: the margin. Theory predicts: green an advantage, grey a tie;"
        " blue: written after the runs",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def at_trained_policies(theorem: pd.DataFrame, cell: str) -> str:
    """Where seed 0's final policies of a cell stand for the theorem: how far r_theta is from r*, and the
    gap the theorem predicts there beside the measured one (in the network's parameters)."""
    rows = theorem[theorem["cell"] == cell] if not theorem.empty else theorem
    if rows.empty:
        return ""
    predicted, measured = "t_pilaf_half - vanilla predicted", "t_pilaf_half - vanilla measured (params)"
    parts = [
        f"{row['trained with']}: sd(r* - r_theta) {row['sd r* - r_theta']:.2f}, predicted gap"
        f" {row[predicted]:+.4f}, measured {row[measured]:+.4f}"
        for _, row in rows.iterrows()
    ]
    return " At seed 0's final policies (" + "; ".join(parts) + ")."


def says(results: list[CellResult], missing: list[str], theorem: pd.DataFrame) -> str:
    """One bullet per cell: prediction, verdict, agreement, where its trained policies stand for the
    theorem; then the cells not run to the end."""
    lines = []
    for r in results:
        d = r.decision
        lines.append(
            f"- **{r.cell.name}** ({r.cell.knobs()}): theory predicts {r.cell.prediction or 'nothing (written after)'};"
            f" PILAF - vanilla {d.text()}; {agreement(r.cell.prediction, d.word)}. Vanilla ends at"
            f" {r.reached:.0%} of J* - J(pi_ref).{at_trained_policies(theorem, r.cell.name)}"
        )
    lines += [f"- **{name}**: not run to the end; no verdict." for name in missing]
    return "\n".join(lines)


def theory_table(theorem: pd.DataFrame) -> str:
    if theorem.empty:
        return "No kept policy: the theorem's quantities at trained policies are not computed."
    shown = theorem[["cell", "trained with", *THEORY_COLUMNS]].rename(columns=THEORY_COLUMNS)
    return markdown(shown.round(4).set_index("cell"))


def write_page(
    results: list[CellResult], missing: list[str], theorem: pd.DataFrame, page: Path, seconds: float
) -> None:
    figure(results, page.parent / FIGURE)
    run_minutes = sum(r.seconds for r in results if not r.cell.kept) / 60
    text = f"""# When does PILAF help? The regime map

Written by `python -m pilaf_exp.results.regimes` (`make regimes`) from the kept raw runs
(results/kept/regimes/, and Table 3's and Fig. 4's archives for the two cells made of those claims) and
the protocol committed before the new cells ran (docs/results/protocol_regimes.yaml: grid, prediction per
cell, decision rule). The new cells' runs took {run_minutes:.1f} min of wall time on 2 cores (2 runs at
once); writing this page took {seconds / 60:.1f} min.

Endpoint: the mean exact J over the annotation budget (Table 3's primary endpoint), PILAF - vanilla paired
by seed; margin 5% of the cell's J* - J(pi_ref) (the two cells made of claims keep the margin their own
protocol fixed before their runs, as RESULTS.md does). "Theory predicts": the closed-form T-PILAF - vanilla
cosine gap with grad J on the path pi_ref -> pi* at t = 0.75 (docs/results/regimes/predictions/), advantage
at >= 0.005.

## The map

{cell_table(results)}

![PILAF - vanilla per cell]({FIGURE})

## What the map says

{says(results, missing, theorem)}

## The theorem's quantities at the trained policies

Seed 0's final policy per cell and sampler (`python -m pilaf_exp.analysis.checkpoint_theory`), on the
first 4 test prompts, pairs over the policy's 512 likeliest responses (the mass they carry is the last
column). The theorem's expansion needs sd(r* - r_theta) small; its predicted gap is the linearised one,
the measured gap uses the exact Bradley-Terry terms. Gaps are in the cosine with grad J of each sampler's
expected DPO descent direction, per response (the tabular view) and, "(params)", in the network's own
parameters; every pair of the support is counted with each sampler's exact probability, so no gap carries
pair-sampling noise. "vanilla (params)" is vanilla's own cosine, for scale.

{theory_table(theorem)}
"""
    page.write_text(text)
