"""The gradient analysis's table: its JSON results as rows, per (training step, sampler) the mean
over seeds with a 95% t interval of each metric and its paired difference with vanilla, and the
Markdown of it. `gradients_report` writes it; `gradients_figure` and `gradients_text` read it.

The cosine is the debiased one (`cosine_debiased`: the pooled gradient's projection on grad J over
the norm estimated from the product of the two independent halves), since Monte Carlo noise inflates
the pooled gradient's norm and pulls the plain cosine toward zero. Each metric's comparisons with
vanilla (every step and sampler) are one family, Holm-corrected: better / worse when the adjusted p
< 0.05, else underpowered (no margin is set for these metrics)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from pilaf_exp.infra.cli import BASELINE_SAMPLER, sampler_order
from pilaf_exp.report import markdown
from pilaf_exp.report.decide import decide, holm_words
from pilaf_exp.report.stats import mean_ci

# column -> (result key, format, higher is better, compared with the baseline as a ratio)
METRICS = {
    "cosine": ("cosine_debiased", "{:.4f}", True, False),
    "gain/annotation": ("gain_per_annotation", "{:.3e}", True, True),
    "SNR": ("snr", "{:.3f}", True, False),
}
RELATIVE = "{:+.1%}"  # the format of a ratio - 1


def load(root: Path) -> tuple[pd.DataFrame, list[dict]]:
    """One row per (result file, sampler), and the records themselves."""
    rows, records = [], []
    for path in sorted(root.rglob("*.json")):
        record = json.loads(path.read_text())
        if "samplers" not in record or "grad_J_norm" not in record:
            continue  # not an analysis result
        records.append(record)
        seed = record["run_seed"] if record.get("run_seed") is not None else record["seed"]
        for name, result in record["samplers"].items():
            rows.append(
                {
                    "step": record["step"],
                    "seed": seed,
                    "sampler": name,
                    "J": record["objective"]["J"],
                    "kl": record["objective"]["kl"],
                    "file": str(path),
                    **result,
                }
            )
    if not rows:
        raise FileNotFoundError(f"no gradient-analysis results (*.json) below {root}")
    return pd.DataFrame(rows), records


def summarise(rows: pd.DataFrame, baseline: str = BASELINE_SAMPLER) -> pd.DataFrame:
    """Per (step, sampler): each metric's mean and interval over seeds, its paired difference with the
    baseline, and the median Monte Carlo error of the cosine."""
    out, families = [], {column: [] for column in METRICS}  # column -> [(row index, decision)]
    for step in sorted(rows["step"].unique()):
        here = rows[rows["step"] == step]
        base = here[here["sampler"] == baseline].set_index("seed")
        for name in sampler_order(here["sampler"]):
            mine = here[here["sampler"] == name].set_index("seed")
            entry = {
                "step": int(step),
                "sampler": name,
                "seeds": len(mine),
                "cosine mc error": float(mine["cosine_mc_error"].median()),
                "noise share": float(mine["noise_share"].median()),
            }
            for column, (key, _, higher, ratio) in METRICS.items():
                interval = mean_ci(mine[key])
                entry |= {f"{column}": interval.mean, f"{column} low": interval.low, f"{column} high": interval.high}
                if name != baseline and len(base):
                    change = mine[key] / base[key] - 1 if ratio else mine[key] - base[key]
                    d = decide(change.reindex(mine.index).dropna(), math.nan, higher)
                    entry |= {f"{column} diff": d.mean, f"{column} diff low": d.low, f"{column} diff high": d.high}
                    families[column].append((len(out), d))
            out.append(entry)
    table = pd.DataFrame(out)
    for column, (_, _, higher, _) in METRICS.items():
        if families[column]:
            where, decisions = zip(*families[column])
            words, adjusted = holm_words(decisions, [higher] * len(decisions))
            table.loc[list(where), f"{column} vs {baseline}"] = words
            table.loc[list(where), f"{column} holm p"] = adjusted
    return table


def cell(stats: pd.Series, column: str, form: str) -> str:
    if pd.isna(stats.get(f"{column} low")):
        return form.format(stats[column])
    return (
        f"{form.format(stats[column])} [{form.format(stats[f'{column} low'])}, {form.format(stats[f'{column} high'])}]"
    )


def diff_cell(stats: pd.Series, column: str, form: str) -> str:
    """The paired difference with the baseline and its verdict ('' for the baseline itself)."""
    if pd.isna(stats.get(f"{column} diff", float("nan"))):
        return ""
    call = stats[f"{column} vs {BASELINE_SAMPLER}"]
    return f"{cell(stats, f'{column} diff', form)} ({call})"


def markdown_table(summary: pd.DataFrame) -> str:
    header = ["step", "sampler", "seeds"]
    for column, (*_, ratio) in METRICS.items():
        header += [column, f"{column} / vanilla's - 1" if ratio else f"{column} - vanilla"]
    header += ["MC error of cosine"]
    rows = []
    for _, stats in summary.iterrows():
        cells = [str(stats["step"]), stats["sampler"], str(stats["seeds"])]
        for column, (_, form, _, ratio) in METRICS.items():
            cells += [cell(stats, column, form), diff_cell(stats, column, RELATIVE if ratio else form)]
        cells.append(f"{stats['cosine mc error']:.4f}")
        rows.append(cells)
    return markdown.markdown_table(header, rows)
