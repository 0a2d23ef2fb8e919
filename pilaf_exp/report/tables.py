"""Runs -> the paper's tables and figures (`python -m pilaf_exp.report <multirun dir> [--out DIR]`).

Finds every run (a directory holding summary.json) below the directory and writes, per
experiment (a sweep's `experiment_name`, else the algorithm): a table of reward, KL and J as
mean ± std over seeds, best in bold and second underlined (Markdown, LaTeX, CSV); reward against
KL at every evaluation (PNG, PDF); J against the number of annotations (PNG, PDF); and the
annotations each sampler needs to reach vanilla's final J (Markdown, CSV; pilaf_exp.report.efficiency).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pilaf_exp.infra.cli import sampler_names
from pilaf_exp.report.efficiency import annotation_efficiency, caption, efficiency_cells
from pilaf_exp.report.plots import plot_j_vs_annotations, plot_reward_kl

SAMPLER_ORDER = sampler_names()  # conf/sampler/: the baseline first, then alphabetical (the paper's order)
# column -> (summary key, higher is better)
METRICS = {"Reward": ("eval/reward", True), "KL": ("eval/kl", False), "J": ("eval/J", True)}


def load_runs(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per run (its summary), and one row per evaluation of every run."""
    summaries, histories = [], []
    for path in sorted(root.rglob("summary.json")):
        summary = json.loads(path.read_text())
        summary["run_dir"] = str(path.parent)
        summary["group"] = summary.get("experiment") or summary["algo"]
        summaries.append(summary)
        history_file = path.parent / "eval_history.csv"
        if history_file.exists():
            history = pd.read_csv(history_file)
            # run_dir keeps two runs of one sampler and seed (a re-run in the same tree) apart.
            histories.append(
                history.assign(
                    group=summary["group"], sampler=summary["sampler"], seed=summary["seed"], run_dir=summary["run_dir"]
                )
            )
    runs = pd.DataFrame(summaries)
    return runs, pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()


def sampler_sort_key(names: pd.Index) -> pd.Index:
    return pd.Index([SAMPLER_ORDER.index(n) if n in SAMPLER_ORDER else len(SAMPLER_ORDER) for n in names])


def gain_fraction(runs: pd.DataFrame) -> pd.Series:
    """Share of the achievable gain: measured gain over the SFT policy / exact (J* - J(pi_ref))."""
    return 100 * (runs["eval/J"] - runs["sft/J"]) / (runs["optimum/J_star"] - runs["optimum/J_ref"])


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per sampler: mean and std over seeds of each metric (std NaN with one seed)."""
    columns = {name: runs[key] for name, (key, _) in METRICS.items()}
    if "optimum/J_star" in runs and runs["optimum/J_star"].notna().all():
        columns["gain %"] = gain_fraction(runs)
    table = pd.DataFrame(columns).assign(sampler=runs["sampler"]).groupby("sampler")
    stats = table.agg(["mean", "std"])
    stats.columns = [f"{metric} {stat}" for metric, stat in stats.columns]
    stats["seeds"] = table.size()
    return stats.sort_index(key=sampler_sort_key)


def ranks(means: pd.Series, higher_is_better: bool) -> dict[str, int]:
    """sampler -> 0 for the best, 1 for the second best (others absent)."""
    order = means.sort_values(ascending=not higher_is_better).index
    return {name: rank for rank, name in enumerate(order[:2])}


def formatted(stats: pd.DataFrame, bold: str, underline: str) -> pd.DataFrame:
    """'mean ± std' strings with the best value wrapped in `bold` and the second in `underline`
    (format strings with one {} each)."""
    metrics = [m for m in [*METRICS, "gain %"] if f"{m} mean" in stats]
    cells = pd.DataFrame(index=stats.index)
    for metric in metrics:
        higher = METRICS.get(metric, (None, True))[1]
        rank = ranks(stats[f"{metric} mean"], higher)
        texts = []
        for sampler, row in stats.iterrows():
            text = f"{row[f'{metric} mean']:.3f}"
            if pd.notna(row[f"{metric} std"]):
                text += f" ± {row[f'{metric} std']:.3f}"
            texts.append([bold, underline, "{}"][rank.get(sampler, 2)].format(text))
        cells[metric] = texts
    cells["seeds"] = stats["seeds"]
    return cells


def markdown(cells: pd.DataFrame) -> str:
    header = ["sampler", *cells.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([name, *map(str, row)]) + " |" for name, row in cells.iterrows()]
    return "\n".join(lines) + "\n"


def latex(cells: pd.DataFrame) -> str:
    cells = cells.apply(lambda column: column.map(lambda v: str(v).replace("±", r"$\pm$")))
    header = " & ".join(["Sampler", *cells.columns]).replace("%", r"\%")
    rows = [" & ".join([name.replace("_", r"\_"), *row]) + r" \\" for name, row in cells.iterrows()]
    spec = "l" + "r" * len(cells.columns)
    body = "\n".join(rows)
    return (
        f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{header} \\\\\n\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}\n"
    )


def write_report(root: Path, out: Path) -> list[Path]:
    runs, histories = load_runs(root)
    if runs.empty:
        raise FileNotFoundError(f"no runs (summary.json) found under {root}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for group, group_runs in runs.groupby("group"):
        stats = summarise(group_runs)
        stats.to_csv(out / f"{group}_table.csv")
        md = markdown(formatted(stats, bold="**{}**", underline="<u>{}</u>"))
        (out / f"{group}_table.md").write_text(md)
        (out / f"{group}_table.tex").write_text(latex(formatted(stats, r"\textbf{{{}}}", r"\underline{{{}}}")))
        print(f"## {group} ({len(group_runs)} runs)\n\n{md}")
        written += [out / f"{group}_table.{ext}" for ext in ("csv", "md", "tex")]
        if not histories.empty:
            group_history = histories[histories["group"] == group]
            written += plot_reward_kl(group_history, out / f"{group}_reward_kl", title=str(group))
            written += plot_j_vs_annotations(group_history, out / f"{group}_J_vs_annotations", title=str(group))
            written += write_efficiency(group_history, out / f"{group}_efficiency", str(group))
    return written


def write_efficiency(history: pd.DataFrame, stem: Path, group: str) -> list[Path]:
    """Annotations to reach vanilla's final J, per sampler (nothing without vanilla runs)."""
    efficiency = annotation_efficiency(history)
    if efficiency is None:
        return []
    efficiency.summary.sort_index(key=sampler_sort_key).to_csv(stem.with_suffix(".csv"))
    md = caption(efficiency) + markdown(efficiency_cells(efficiency).sort_index(key=sampler_sort_key))
    stem.with_suffix(".md").write_text(md)
    print(f"## {group}: annotations to reach vanilla's final J\n\n{md}")
    return [stem.with_suffix(".csv"), stem.with_suffix(".md")]
