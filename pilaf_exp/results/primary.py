"""Each claim's primary endpoint, as the protocol declared it (docs/results/protocol.yaml, `chosen:`):
per run the endpoint on its exact curve (`pilot.endpoints`), each sampler minus vanilla paired by seed,
and the verdict word against the protocol's margin (`report.decide.decide`). The claim's own test is PILAF's
(unadjusted: it is the one primary test); the other samplers' rows are secondary, Holm-corrected among
themselves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from pilaf_exp.infra.cli import BASELINE_SAMPLER, sampler_names
from pilaf_exp.report.decide import Decision, decide, holm_words
from pilaf_exp.report.stats import mean_ci
from pilaf_exp.report.tables import load_runs, markdown
from pilaf_exp.results.pilot import endpoints, stability
from pilaf_exp.results.protocol import run_checks

CANDIDATE = "pilaf"  # the sampler each claim is about: its row is the claim's one primary test


def per_seed(root: Path, endpoint: str) -> pd.DataFrame:
    """seed x sampler: the primary endpoint of each run (re-runs of a seed averaged)."""
    runs, histories = load_runs(root)
    rows = []
    for _, run in runs.iterrows():
        history = histories[histories["run_dir"] == run["run_dir"]]
        rows.append({"sampler": run["sampler"], "seed": run["seed"], "value": endpoints(history)[endpoint]})
    return pd.DataFrame(rows).groupby(["seed", "sampler"])["value"].mean().unstack("sampler")


def decisions(table: pd.DataFrame, margin: float) -> dict[str, Decision]:
    """Every sampler against vanilla on the seeds both have."""
    out = {}
    for sampler in table.columns.drop(BASELINE_SAMPLER, errors="ignore"):
        both = table[[sampler, BASELINE_SAMPLER]].dropna()
        out[sampler] = decide(both[sampler] - both[BASELINE_SAMPLER], margin)
    return out


def secondary_after_holm(words: dict[str, Decision]) -> dict[str, str]:
    """The verdicts of every sampler but the candidate, Holm-corrected among themselves, as text."""
    others = [s for s in words if s != CANDIDATE]
    adjusted, _ = holm_words([words[s] for s in others], [True] * len(others))
    note = f" (secondary, Holm over {len(others)})"
    return {s: dataclasses.replace(words[s], word=word).text() + note for s, word in zip(others, adjusted)}


def primary_table(root: Path, endpoint: str, margin: float) -> str:
    """Markdown: per sampler the endpoint's mean [95% CI] and its verdict against vanilla (the candidate's
    unadjusted, the others' secondary after Holm)."""
    table = per_seed(root, endpoint)
    words = decisions(table, margin)
    texts = {s: d.text() for s, d in words.items() if s == CANDIDATE} | secondary_after_holm(words)
    order = [s for s in sampler_names() if s in table.columns] + [s for s in table.columns if s not in sampler_names()]
    cells = pd.DataFrame(index=pd.Index(order, name="sampler"))
    means = {s: mean_ci(table[s]) for s in order}
    cells["primary endpoint [95% CI]"] = [
        f"{means[s].mean:.3f} [{means[s].low:.3f}, {means[s].high:.3f}]" for s in order
    ]
    cells[f"vs {BASELINE_SAMPLER}"] = [texts.get(s, "—") for s in order]
    cells["seeds"] = [means[s].n for s in order]
    return markdown(cells)


def stability_table(root: Path, rule: dict) -> str:
    """Protocol rule 1 checked again on the claim runs, per sampler: runs, the worst exact-J drop and
    sampled-KL jump over them, and how many runs break the rule (markdown)."""
    runs, histories = load_runs(root)
    rows = [
        {
            "candidate": run["sampler"],
            "seed": run["seed"],
            **run_checks(histories[histories["run_dir"] == run["run_dir"]]),
        }
        for _, run in runs.iterrows()
    ]
    table = stability(pd.DataFrame(rows), rule)
    order = [s for s in sampler_names() if s in table.index]
    cells = pd.DataFrame(index=pd.Index(order, name="sampler"))
    cells["runs"] = [int(table.loc[s, "seeds"]) for s in order]
    cells["worst exact-J drop"] = [f"{table.loc[s, 'worst_drop']:.3f}" for s in order]
    cells["worst sampled-KL jump (nats)"] = [f"{table.loc[s, 'worst_jump']:.2f}" for s in order]
    cells["runs breaking the rule"] = [int(table.loc[s, "violating_runs"]) for s in order]
    return markdown(cells)
