"""The results section of the gradient analysis (docs/results/gradients.md), written from the numbers:
what the paper claims, what was measured, and whether the measurements agree."""

from __future__ import annotations

import statistics

import pandas as pd

from pilaf_exp.analysis.gradients_table import RELATIVE
from pilaf_exp.analysis.prose import CAVEATS, CLAIMS, METHOD, THEORY
from pilaf_exp.infra.cli import BASELINE_SAMPLER
from pilaf_exp.report.decide import decide, holm_words

PILAF, T_PILAF = "pilaf", "t_pilaf"
# report column -> result key; the cosine is the debiased one (gradients_table)
KEYS = {"cosine": "cosine_debiased", "gain/annotation": "gain_per_annotation", "SNR": "snr"}
# (the paper's claim, report column, what it measures)
CLAIM_METRICS = (
    ("i", "cosine", "cosine with grad J"),
    ("i", "gain/annotation", "gain in J per annotation"),
    ("ii", "SNR", "signal-to-noise along grad J"),
)


def method(records: list[dict]) -> str:
    """The method, with the enumeration's sizes and the policies' spread from the results."""
    vocab, length = records[0]["vocab"], records[0]["length"]
    entropies = [r["mass"]["entropy"] for r in records]
    return METHOD.format(
        tree_positions=sum(vocab**d for d in range(length)),
        responses=vocab**length,
        full_positions=vocab**length * length,
        entropy_low=min(entropies),
        entropy_high=max(entropies),
        kept_2=statistics.mean(r["mass"]["responses_for_1-0.01"] for r in records),
        kept_4=statistics.mean(r["mass"]["responses_for_1-0.0001"] for r in records),
    )


def step_rows(summary: pd.DataFrame, step: int) -> pd.DataFrame:
    return summary[summary["step"] == step].set_index("sampler")


def comparison(stats: pd.Series, column: str, form: str) -> str:
    d = [form.format(stats[f"{column} diff{end}"]) for end in ("", " low", " high")]
    call = stats[f"{column} vs {BASELINE_SAMPLER}"]
    return f"{d[0]} ({call})" if call == "n/a" else f"{d[0]} [{d[1]}, {d[2]}] ({call})"


def claim_verdict(summary: pd.DataFrame, column: str, trained: list[int], sampler: str = PILAF) -> str:
    """`sampler` against vanilla on one metric, step by step (Holm-adjusted over the metric's family,
    `gradients_table.summarise`): agrees (better at every step), disagrees (worse somewhere, better
    nowhere), mixed, or not resolved."""
    if sampler not in set(summary["sampler"]) or f"{column} vs {BASELINE_SAMPLER}" not in summary.columns:
        return f"not measured (no {sampler} and vanilla results to pair)"
    calls = [step_rows(summary, s).loc[sampler].get(f"{column} vs {BASELINE_SAMPLER}", "n/a") for s in trained]
    if not calls or "n/a" in calls:
        return "not measured (fewer than 2 seeds at a trained step)"
    better = [str(s) for s, c in zip(trained, calls) if c == "better"]
    worse = [str(s) for s, c in zip(trained, calls) if c == "worse"]
    if len(better) == len(trained):
        return f"**agrees**: {sampler} above vanilla at every trained step ({', '.join(better)})"
    if worse and not better:
        return f"**disagrees**: {sampler} below vanilla at step(s) {', '.join(worse)}, never above"
    if worse:
        return f"**mixed**: {sampler} above vanilla at step(s) {', '.join(better)}, below at {', '.join(worse)}"
    return (
        f"**not resolved**: {sampler} above vanilla at {len(better)} of {len(trained)} trained steps, "
        "no difference shown elsewhere (underpowered after Holm)"
    )


def pooled(rows: pd.DataFrame, sampler: str) -> str:
    """`sampler` against vanilla pooled over every trained (seed, step): one paired interval per metric,
    the three metrics one Holm family."""
    trained = rows[rows["step"] > 0].set_index(["seed", "step"])
    mine, base = trained[trained["sampler"] == sampler], trained[trained["sampler"] == BASELINE_SAMPLER]
    cells = paired_cells([(mine[key], base[key].reindex(mine.index), column) for column, key in KEYS.items()])
    return f"* {sampler} - vanilla pooled over the {len(mine)} trained (seed, step): " + "; ".join(cells) + "."


def agreement(summary: pd.DataFrame, rows: pd.DataFrame) -> str:
    """The verdicts on the paper's two claims, for PILAF and for T-PILAF, and the level of the cosines."""
    trained = sorted(s for s in summary["step"].unique() if s > 0)
    lines = []
    for sampler in (PILAF, T_PILAF):
        if sampler not in set(summary["sampler"]):
            continue
        for claim, column, what in CLAIM_METRICS:
            lines.append(f"* ({claim}) {sampler}, {what}: {claim_verdict(summary, column, trained, sampler)}.")
        lines.append(pooled(rows, sampler))
    for step in sorted(summary["step"].unique()):
        here = rows[rows["step"] == step]
        means = here.groupby("sampler")["cosine_debiased"].mean()
        below = int(((1 - here["cosine_debiased"]) > 3 * here["cosine_mc_error"]).sum())
        lines.append(
            f"* Step {step}: mean debiased cosines {means.min():.3f} ({means.idxmin()}) to {means.max():.3f} "
            f"({means.idxmax()}); 1 - cosine exceeds 3x its two-halves Monte Carlo error in {below} of "
            f"{len(here)} (analysis, sampler)."
        )
    lines.append(noise_line(summary, rows))
    return "\n".join(lines)


def noise_line(summary: pd.DataFrame, rows: pd.DataFrame) -> str:
    """The Monte Carlo error of the cosine against the differences between samplers (trained steps)."""
    trained = summary[(summary["step"] > 0) & (summary["sampler"] != BASELINE_SAMPLER)]
    error = rows[rows["step"] > 0]["cosine_mc_error"].median()
    gaps = trained["cosine diff"].abs()
    mine = gaps[trained["sampler"] == PILAF]
    pilaf = f"; PILAF's {mine.median():.4f}" if len(mine) else ""
    return (
        f"* Monte Carlo error against the differences (trained steps): median two-halves cosine error {error:.4f}, "
        f"median |cosine - vanilla's| over samplers and steps {gaps.median():.4f}{pilaf}."
    )


def leaders(rows: pd.DataFrame) -> str:
    """Which sampler has the highest mean of each metric."""
    return "; ".join(
        f"highest {c}: {rows[c].idxmax()} ({rows[c].max():.4g})" for c in ("cosine", "gain/annotation", "SNR")
    )


def findings(summary: pd.DataFrame) -> list[str]:
    steps = sorted(summary["step"].unique())
    lines = []
    if 0 in steps:
        zero = step_rows(summary, 0)
        spread = zero["cosine"].max() - zero["cosine"].min()
        lines.append(
            f"* Step 0 (one pair distribution for all samplers): cosines {zero['cosine'].min():.4f} to "
            f"{zero['cosine'].max():.4f} (spread {spread:.4f}; median Monte Carlo error of one analysis "
            f"{zero['cosine mc error'].median():.4f}): the noise floor of the comparison."
        )
    for step in (s for s in steps if s > 0):
        rows = step_rows(summary, step)
        text = f"* Step {step}: {leaders(rows)}."
        if PILAF in rows.index and "cosine diff" in rows.columns:
            pilaf = rows.loc[PILAF]
            text += f" PILAF - vanilla: cosine {comparison(pilaf, 'cosine', '{:+.4f}')}, "
            text += f"gain/annotation / vanilla's - 1 {comparison(pilaf, 'gain/annotation', '{:+.1%}')}, "
            text += f"SNR {comparison(pilaf, 'SNR', '{:+.3f}')}."
        lines.append(text)
    return lines


def paired_cells(comparisons: list[tuple[pd.Series, pd.Series, str]]) -> list[str]:
    """Metrics of a sampler against another, paired by seed: each difference (the gain: ratio - 1) and
    its word, the list one Holm family."""
    decisions = []
    for mine, base, column in comparisons:
        relative = column == "gain/annotation"
        decisions.append(decide((mine / base - 1 if relative else mine - base).dropna(), float("nan")))
    words, _ = holm_words(decisions, [True] * len(decisions))
    cells = []
    for (_, _, column), d, word in zip(comparisons, decisions, words):
        relative = column == "gain/annotation"
        form, label = (RELATIVE, f"{column} (ratio - 1)") if relative else ("{:+.4f}", column)
        cells.append(f"{label} {form.format(d.mean)} [{form.format(d.low)}, {form.format(d.high)}] ({word})")
    return cells


def coefficient_lines(rows: pd.DataFrame) -> list[str]:
    """PILAF's coefficient grid against coef = beta (plain `pilaf`), paired by seed, per step."""
    lines = []
    for step in sorted(rows["step"].unique()):
        here = rows[rows["step"] == step]
        base = here[here["sampler"] == PILAF].set_index("seed")
        for name in sorted(n for n in here["sampler"].unique() if n.startswith(f"{PILAF}[")):
            mine = here[here["sampler"] == name].set_index("seed")
            cells = paired_cells([(mine[key], base[key], column) for column, key in KEYS.items()])
            lines.append(f"* Step {step}, {name} - pilaf: " + "; ".join(cells) + ".")
    return lines


def pairs_text(record: dict) -> str:
    """'4096 pairs per prompt and half (best_of_n: 1024)'."""
    counts = record["pairs_per_prompt_half"]
    if not isinstance(counts, dict):  # one count for every sampler
        return f"{counts} pairs per prompt and half"
    common = statistics.mode(counts.values())
    others = ", ".join(f"{name}: {count}" for name, count in counts.items() if count != common)
    return f"{common} pairs per prompt and half" + (f" ({others})" if others else "")


def timing_lines(records: list[dict]) -> list[str]:
    """Wall time per policy analysed, by set of samplers, with its split (medians over the analyses)."""
    lines = []
    for names in sorted({tuple(r["samplers"]) for r in records}, key=len):
        mine = [r for r in records if tuple(r["samplers"]) == names]
        median = lambda key: statistics.median(r["seconds"].get(key, float("nan")) for r in mine)  # noqa: E731
        split = ", ".join(f"{name} {median(f'sampling/{name}'):.0f}" for name in names)
        lines.append(
            f"* {len(names)} samplers ({', '.join(names)}; {mine[0]['prompts']} prompts, {pairs_text(mine[0])}), "
            f"{len(mine)} analyses: median {median('policy'):.0f} s per policy (max "
            f"{max(r['seconds']['policy'] for r in mine):.0f} s) = sampling {median('sampling'):.0f} s ({split}) + "
            f"gradients {median('gradients'):.0f} s + directional derivatives {median('directional'):.0f} s; "
            f"set-up (world and cached response table) median {median('setup'):.0f} s."
        )
    machine = [r["machine"] for r in records if "machine" in r]
    if machine:
        threads = sorted({m["threads"] for m in machine})
        load = statistics.median(m["load_average"] for m in machine)
        lines.append(
            f"* Machine (recorded by {len(machine)} of {len(records)} analyses): {', '.join(map(str, threads))} "
            f"torch thread(s) per process, 1-minute load average at the end of an analysis median {load:.1f} on "
            "2 cores shared with other work: the times above are those of a busy machine."
        )
    return lines


def section(summary: pd.DataFrame, rows: pd.DataFrame, records: list[dict], table: str, figure: str) -> str:
    first, seeds = records[0], sorted(rows["seed"].unique())
    steps = ", ".join(map(str, sorted(summary["step"].unique())))
    parts = [
        "# Does each sampler's expected DPO gradient point along grad J?",
        "Generated by `python -m pilaf_exp.analysis.gradients_report` from the JSON results of "
        "`python -m pilaf_exp.analysis.gradients`; do not edit by hand.",
        CLAIMS,
        method(records),
        f"Setting: beta = {first['beta']}, lr = {first['lr']}, batch = {first['batch_size']} pairs, "
        f"{first['prompts']} test prompts, {pairs_text(first)}; policies at steps {steps}, seeds "
        f"{', '.join(map(str, seeds))} ({len(records)} analyses).",
        THEORY,
        "## Results\n\nMean over seeds [95% t interval]; cosine = the debiased cosine (the pooled gradient's "
        "projection on grad J over the norm from the product of its two independent halves; the plain cosine is "
        "pulled toward 0 by Monte Carlo noise). 'X - vanilla' paired by seed, (better/worse) when its Holm-adjusted "
        "p < 0.05 within the metric's family (every step and sampler), else underpowered. MC error: median over "
        "seeds of the cosine's two-halves error.\n\n" + table,
        f"![cosine, gain and SNR by sampler along training]({figure})",
        "## Does it agree?\n\n" + agreement(summary, rows),
        "### By step\n\n" + "\n".join(findings(summary)),
        "### PILAF's coefficient (theory: coef = beta; `pilaf` is coef = beta)\n\n"
        + ("\n".join(coefficient_lines(rows)) or "not measured"),
        "### Wall time\n\n" + "\n".join(timing_lines(records)),
        CAVEATS,
    ]
    return "\n\n".join(parts) + "\n"
