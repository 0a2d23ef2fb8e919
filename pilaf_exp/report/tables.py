"""Runs -> the paper's tables and figures (`python -m pilaf_exp.report <multirun dir> [--out DIR]`).

Finds every run (a directory holding summary.json) below the directory and writes, per
experiment (a sweep's `experiment_name`, else the algorithm): a table of the final reward, KL, J and
gain % (exact where the task is enumerable) as mean [95% t interval] over seeds, unmarked (an ordering of
means is not evidence), with J - vanilla's J paired by seed, marked only where its interval excludes zero
(Markdown, LaTeX, CSV: `<group>_table.*`);
reward against KL at every evaluation (PNG, PDF); J against the number of annotations (PNG, PDF);
the curve metrics of every run and their paired comparison with vanilla (`<group>_curves.md/.csv`,
`<group>_curves_per_run.csv`; pilaf_exp.report.curves); and the annotations each sampler needs to
reach vanilla's final J (Markdown, CSV; pilaf_exp.report.efficiency). Seeds are few, so a difference
is called a win only when its paired interval excludes zero (pilaf_exp.report.stats).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pilaf_exp.infra.cli import BASELINE_SAMPLER, sampler_order
from pilaf_exp.infra.names import (
    ANNOTATIONS,
    EVAL_J,
    EXACT,
    EXACT_GAIN,
    EXACT_J,
    KL,
    OPTIMUM_J_REF,
    OPTIMUM_J_STAR,
    REWARD,
    SAMPLED,
    SFT_J,
    J,
    metric_key,
)
from pilaf_exp.report import curves
from pilaf_exp.report.curves import difference_columns, difference_text, interval_text
from pilaf_exp.report.decide import decide, margin_of
from pilaf_exp.report.efficiency import annotation_efficiency, caption, efficiency_cells
from pilaf_exp.report.markdown import markdown
from pilaf_exp.report.plots import plot_j_vs_annotations, plot_reward_kl
from pilaf_exp.report.runs import load_runs
from pilaf_exp.report.stats import Interval, mean_ci, paired
from pilaf_exp.report.sweep_time import time_table

# column -> (metric: the summary key after its source, exact or sampled; higher is better)
METRICS = {"Reward": (REWARD, True), "KL": (KL, False), "J": (J, True)}
DIFF = "J diff"  # the paired J - baseline J columns of the endpoint table's CSV: "J diff mean", "J diff pairs", ...


def diff_column(key: str) -> str:
    """`curves.difference_columns`' key -> the endpoint table's column ('diff ci low' -> 'J diff ci low')."""
    return f"{DIFF} {key.removeprefix('diff ')}"


def gain_fraction(runs: pd.DataFrame) -> pd.Series:
    """Share of the achievable gain: measured gain over the SFT policy / exact (J* - J(pi_ref))."""
    return 100 * (runs[EVAL_J] - runs[SFT_J]) / (runs[OPTIMUM_J_STAR] - runs[OPTIMUM_J_REF])


def endpoint_source(runs: pd.DataFrame) -> str:
    """EXACT when every run has its final policy's exact values (an enumerable task), else SAMPLED:
    one source for the whole table, so no column mixes noisy and exact numbers."""
    return EXACT if EXACT_J in runs and runs[EXACT_J].notna().all() else SAMPLED


def endpoint_values(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: sampler, seed, final reward, KL, J and, where J* is known, gain % (100 x exact/gain,
    else `gain_fraction` of the sampled J)."""
    source = endpoint_source(runs)
    columns = {name: runs[metric_key(source, metric)] for name, (metric, _) in METRICS.items()}
    if source == EXACT and EXACT_GAIN in runs and runs[EXACT_GAIN].notna().all():
        columns["gain %"] = 100 * runs[EXACT_GAIN]
    elif OPTIMUM_J_STAR in runs and runs[OPTIMUM_J_STAR].notna().all():
        columns["gain %"] = gain_fraction(runs)
    return pd.DataFrame(columns).assign(sampler=runs["sampler"], seed=runs["seed"])


def summarise(runs: pd.DataFrame, baseline: str = BASELINE_SAMPLER) -> pd.DataFrame:
    """Per sampler: mean, std, 95% t interval over seeds of each final metric (std and interval NaN
    with one seed), and J - the baseline's J paired by seed (re-runs of a seed averaged first)."""
    values = endpoint_values(runs)
    metrics = [c for c in values.columns if c not in ("sampler", "seed")]
    rows = {}
    for sampler, group in values.groupby("sampler"):
        row = {}
        for metric in metrics:
            interval = mean_ci(group[metric])
            row |= {
                f"{metric} mean": interval.mean,
                f"{metric} std": group[metric].std(),
                f"{metric} ci low": interval.low,
                f"{metric} ci high": interval.high,
            }
        rows[sampler] = row | {"seeds": len(group)}
    stats = pd.DataFrame.from_dict(rows, orient="index").rename_axis("sampler")
    by_seed = values.groupby(["sampler", "seed"])["J"].mean().unstack("sampler")  # seed x sampler
    diffs = {}
    margin = margin_of(runs) if endpoint_source(runs) == "exact" else math.nan
    for sampler in stats.index.drop(baseline, errors="ignore") if baseline in by_seed else []:
        both = by_seed[[sampler, baseline]].dropna()
        d = both[sampler] - both[baseline]
        decision = decide(d, margin)
        columns = difference_columns(paired(d), higher=True) | {"verdict": decision.word}
        columns |= {"p": decision.p, "tost p": decision.tost_p, "mde": decision.mde, "margin": margin}
        diffs[sampler] = {diff_column(key): value for key, value in columns.items()}
    if diffs:
        stats = stats.join(pd.DataFrame.from_dict(diffs, orient="index")).astype({diff_column("pairs"): "Int64"})
    return stats.loc[sampler_order(stats.index)]


def formatted(stats: pd.DataFrame, win: str = "**{}**") -> pd.DataFrame:
    """'mean [95% CI]' strings, unmarked (an ordering of means is not evidence), and the paired J
    difference with the baseline, wrapped in `win` (a format string with one {}) only when its
    interval excludes 0 on the better side (`curves.difference_text`)."""
    metrics = [m for m in [*METRICS, "gain %"] if f"{m} mean" in stats]
    cells = pd.DataFrame(index=stats.index)
    for metric in metrics:
        texts = []
        for _, row in stats.iterrows():
            interval = Interval(row[f"{metric} mean"], row[f"{metric} ci low"], row[f"{metric} ci high"], row["seeds"])
            texts.append(interval_text(interval, ".3f"))
        cells[metric] = texts
    if f"{DIFF} mean" in stats:
        keys = [*difference_columns(paired([]), higher=True), "mde", "margin"]  # what `difference_text` reads
        diffs = stats[[diff_column(key) for key in keys]].set_axis(list(keys), axis=1)
        cells[f"ΔJ vs {BASELINE_SAMPLER} [95% CI]"] = [difference_text(row, ".3f", win) for _, row in diffs.iterrows()]
    cells["seeds"] = stats["seeds"]
    return cells


def endpoint_caption(source: str) -> str:
    what = "exact (enumerated, no sampling noise)" if source == EXACT else "sampled evaluation"
    return (
        f"Final policy, {what}: mean [95% t interval] over seeds. ΔJ = J - {BASELINE_SAMPLER}'s J paired by "
        "seed: ▲ better / ▼ worse (bold = better) when its 95% interval excludes 0; equivalent within ±m when "
        "two one-sided t tests at 5% put it inside the margin m = 5% of J* - J(pi_ref); else underpowered, with "
        "the minimum difference the seeds could detect at 80% power (MDE). Each row is one unadjusted test; no "
        "other cell is marked, since an ordering of means is not evidence.\n\n"
    )


LATEX = {"±": r"$\pm$", "▲": r"$\blacktriangle$", "▼": r"$\blacktriangledown$", "Δ": r"$\Delta$", "%": r"\%"}


def to_latex(text: str) -> str:
    for symbol, command in LATEX.items():
        text = text.replace(symbol, command)
    return text


def latex(cells: pd.DataFrame) -> str:
    """A booktabs tabular (needs amssymb for the ▲/▼ markers)."""
    cells = cells.apply(lambda column: column.map(lambda v: to_latex(str(v))))
    header = " & ".join(["Sampler", *map(to_latex, cells.columns)])
    rows = [" & ".join([name.replace("_", r"\_"), *row]) + r" \\" for name, row in cells.iterrows()]
    spec = "l" + "r" * len(cells.columns)
    body = "\n".join(rows)
    return (
        f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{header} \\\\\n\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}\n"
    )


def write_report(root: Path, out: Path) -> list[Path]:
    """Per experiment group: the endpoint table, the figures, the curve comparison and annotation efficiency."""
    runs, histories = load_runs(root)
    if runs.empty:
        raise FileNotFoundError(f"no runs (summary.json) found under {root}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for group, group_runs in runs.groupby("group"):
        stats = summarise(group_runs)
        stats.to_csv(out / f"{group}_table.csv")
        md = endpoint_caption(endpoint_source(group_runs)) + markdown(formatted(stats))
        (out / f"{group}_table.md").write_text(md)
        (out / f"{group}_table.tex").write_text(latex(formatted(stats, r"\textbf{{{}}}")))
        print(f"## {group} ({len(group_runs)} runs)\n\n{md}")
        written += [out / f"{group}_table.{ext}" for ext in ("csv", "md", "tex")]
        if not histories.empty:
            group_history = histories[histories["group"] == group]
            written += plot_reward_kl(group_history, out / f"{group}_reward_kl", title=str(group))
            written += plot_j_vs_annotations(group_history, out / f"{group}_J_vs_annotations", title=str(group))
            margin = margin_of(group_runs) if endpoint_source(group_runs) == "exact" else math.nan
            written += write_curves(group_history, out / f"{group}_curves", str(group), margin)
            written += write_efficiency(group_history, out / f"{group}_efficiency", str(group))
    times = time_table(root)
    if times:
        (out / "sweep_time.md").write_text(times)
        written.append(out / "sweep_time.md")
    return written


def write_curves(history: pd.DataFrame, stem: Path, group: str, margin: float = math.nan) -> list[Path]:
    """The curve metrics per run (`<stem>_per_run.csv`) and per sampler with paired tests (CSV, Markdown)."""
    if history.empty or ANNOTATIONS not in history:
        return []
    per_run = curves.per_run(history)
    table = curves.compare(per_run, margin=margin)
    per_run_path = stem.with_name(stem.name + "_per_run.csv")
    per_run.to_csv(per_run_path, index=False)
    table.to_csv(stem.with_suffix(".csv"), index=False)
    md = curves.caption(curves.baseline_gain(history), curves.scale(history)) + markdown(curves.comparison_cells(table))
    stem.with_suffix(".md").write_text(md)
    print(f"## {group}: J-vs-annotations curves\n\n{md}")
    return [stem.with_suffix(".csv"), stem.with_suffix(".md"), per_run_path]


def write_efficiency(history: pd.DataFrame, stem: Path, group: str) -> list[Path]:
    """Annotations to reach vanilla's final J, per sampler (nothing without vanilla runs)."""
    efficiency = annotation_efficiency(history, column=curves.scale(history))
    if efficiency is None:
        return []
    order = sampler_order(efficiency.summary.index)
    efficiency.summary.loc[order].to_csv(stem.with_suffix(".csv"))
    md = caption(efficiency) + markdown(efficiency_cells(efficiency).loc[order])
    stem.with_suffix(".md").write_text(md)
    print(f"## {group}: annotations to reach vanilla's final J\n\n{md}")
    return [stem.with_suffix(".csv"), stem.with_suffix(".md")]
