"""RESULTS.md's text around the report's tables: provenance, the protocol, and each claim's verdict,
all read from files the report wrote (nothing typed)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pilaf_exp.infra.cli import BASELINE_SAMPLER
from pilaf_exp.results.primary import CANDIDATE, primary_table, stability_table

# The report's tables a claim's section shows: (file stem after `<group>_`, title).
SECTIONS = (
    ("table", "Final policy"),
    ("curves", "Whole curves"),
    ("efficiency", "Annotations to reach vanilla's final J"),
)


def header(versions: dict[str, str], sweep_seconds: float, wall: float, exact_prompts: dict[str, int]) -> str:
    """`exact_prompts`: per claim, how many test prompts its runs enumerate exactly (their resolved config)."""
    counts = sorted(set(exact_prompts.values()))
    prompts = f"{counts[0]}" if len(counts) == 1 else ", ".join(f"{n} ({claim})" for claim, n in exact_prompts.items())
    produced = ", ".join(f"{name} {version}" for name, version in versions.items())  # e.g. "torch 2.13.0"
    return f"""# Results

Written by `make results` (`python -m pilaf_exp.results`) on {time.strftime("%Y-%m-%d")}: the
protocol sweep, the paper's claims on the embedded task, their reports; nothing below is typed by
hand. Produced by {produced} (the locked environment, `requirements.lock`). The sweeps took
{sweep_seconds / 60:.1f} min of wall time on this machine (2 CPU cores); this rebuild {wall / 60:.1f} min.
Every run's raw files (resolved config, summary, evaluation history, timing) are kept in the
repository, one archive per sweep in `results/kept/`, from which `python -m pilaf_exp.results
--only-write` rebuilds this page; the report files are in `docs/results/<sweep>/`.

How to read the tables: J = reward - beta KL (beta 0.1). "exact" values are computed by enumerating
every response of the first {prompts} test prompts (no sampling noise); "sampled" ones come from 256 test
prompts; no metric mixes the two, and every caption names its scale. Intervals are 95% Student-t
intervals over seeds; comparisons with {BASELINE_SAMPLER} are paired by seed (same prompts, same start).
Each comparison ends in one word: better / worse when the paired interval excludes zero; equivalent
within ±m when two one-sided t tests put the difference inside the margin m (5% of J* - J(pi_ref));
otherwise underpowered, printed with the minimum difference the seeds could detect at 80% power (MDE).
Secondary tables are exploratory and Holm-corrected within each claim.

"""


def protocol_section(protocol: dict, path: Path, pilot_report: Path) -> str:
    """The protocol file's rule and the values its pilot chose (`path`, relative to the repository)."""
    chosen, rule, pilot = protocol.get("chosen"), protocol["rule"], protocol["pilot"]
    start = [o for o in pilot.get("overrides", []) if not o.startswith("save_policy")]
    candidates = "; ".join(
        f"{name}: "
        + ", ".join(
            f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}" for key, value in overrides.items()
        )
        for name, overrides in protocol["candidates"].items()
    )
    algo = f"{pilot.get('algo', 'online')} DPO" + (f" ({', '.join(start)})" if start else "")
    text = (
        f"## Protocol (committed before the claim runs: {path})\n\n"
        f"Stabiliser candidates, all at 38,400 annotations of {algo}: {candidates}.\n"
        f"The rule, written before the pilot ran: from vanilla-only runs on seeds {pilot['seeds']} (no table uses\n"
        f"them), keep the candidates whose every seed loses no more than {rule['max_exact_drop']} exact J between\n"
        f"consecutive exact evaluations and jumps no more than {rule['max_kl_jump']} nats of sampled KL between\n"
        "consecutive sampled ones; among them take the (candidate, primary endpoint) with the smallest\n"
        f"between-seed sd over its gain. Margin m = {rule['margin_share']:.0%} of J* - J(pi_ref); seeds: the fewest\n"
        f"at which a paired t test (paired sd = sqrt(2) x the pilot sd) detects m with {rule['power']:.0%} power.\n"
    )
    if not chosen:
        return text + "\nThe pilot has not been run to the end yet: no value is chosen and no claim was run.\n"
    for name in ("pilot_stability.md", "pilot_spread.md"):
        if (pilot_report / name).exists():
            text += "\n" + (pilot_report / name).read_text()
    text += (
        f"\nChosen: **{chosen['candidate']}**, primary endpoint **{chosen['endpoint']}** (between-seed sd "
        f"{chosen['between_seed_sd']}), margin m = {chosen['margin']}, "
    )
    if "seeds_needed" in chosen and chosen["seeds_needed"] > chosen["seeds_per_sampler"]:
        text += (
            f"**{chosen['seeds_per_sampler']} seeds** per sampler: power asks for {chosen['seeds_needed']}, the "
            f"protocol caps the seeds at {rule['max_seeds']} (rule 6), so the MDE at these seeds is "
            f"{chosen['mde_at_chosen_seeds']} and an interval holding zero reads underpowered.\n"
        )
    else:
        text += (
            f"**{chosen['seeds_per_sampler']} seeds** per sampler for an MDE of m at 80% power (at 10 seeds the "
            f"MDE is {chosen['mde_at_10_seeds']}).\n"
        )
    error = chosen.get("evaluation_error", {})
    if "exact_prompts" in error:
        text += (
            "Evaluation error (rule 5) on the pilot's final policies: median standard error "
            f"{error['median_standard_error']} over {error['prompts']} prompts against a bound of {error['bound']}; "
            f"{error['prompts_for_bound']} prompts "
            f"meet it, and the claim runs enumerate **{error['exact_prompts']} prompts** exactly (rule 7"
            f"{'' if error['exact_prompts_meet_bound'] else ': capped, so the bound is not met'}).\n"
        )
    return text


def verdict(table: Path) -> str:
    """Reproduces / refutes / equivalent within ±m / underpowered (MDE), from the endpoint table's paired
    J difference."""
    stats = pd.read_csv(table, index_col=0)
    if CANDIDATE not in stats.index or "J diff verdict" not in stats:
        return f"cannot tell: no paired {CANDIDATE} - {BASELINE_SAMPLER} comparison in this sweep"
    row = stats.loc[CANDIDATE]
    interval = f"{row['J diff mean']:+.3f} [{row['J diff ci low']:+.3f}, {row['J diff ci high']:+.3f}]"
    pairs = f"{int(row['J diff pairs'])} paired seeds"
    if row["J diff verdict"] == "better":
        return f"**reproduces**: {CANDIDATE}'s final J is higher, paired difference {interval} over {pairs}"
    if row["J diff verdict"] == "worse":
        return f"**refutes**: {CANDIDATE}'s final J is lower, paired difference {interval} over {pairs}"
    if row["J diff verdict"] == "equivalent":
        return f"**equivalent within ±{row['J diff margin']:.3f}**: paired difference {interval} over {pairs}"
    return (
        f"**underpowered**: the paired difference {interval} over {pairs} holds zero and does not fit a margin; "
        f"the smallest difference these seeds detect at 80% power is {row['J diff mde']:.3f}"
    )


def claim_section(
    name: str, claim: str, report_dir: Path, sweep_dir: Path, chosen: dict | None = None, rule: dict | None = None
) -> str:
    group = name
    parts = [f"## {claim}\n"]
    if chosen and rule:
        parts.append(
            f"The protocol's stability rule checked again on these runs (no more than {rule['max_exact_drop']} exact J "
            f"lost between consecutive exact evaluations, no more than {rule['max_kl_jump']} nats of sampled KL "
            f"between consecutive sampled ones; a run that breaks it stays in the table):\n\n"
            f"{stability_table(sweep_dir, rule)}"
        )
    if chosen:
        endpoint, margin = chosen["endpoint"], chosen["margin"]
        table = primary_table(sweep_dir, endpoint, margin)
        parts.append(
            f"Sweep `{name}` (its raw runs: `results/kept/{name}.tar.xz`). Primary "
            f"endpoint (the protocol's): exact J, {endpoint}; each sampler "
            f"minus {BASELINE_SAMPLER} paired by seed, margin ±{margin}; {CANDIDATE}'s row is the claim's test, the "
            f"other samplers' rows are secondary (Holm among themselves):\n\n{table}"
        )
    parts.append(f"Final exact J (secondary): {verdict(report_dir / f'{group}_table.csv')}.\n")
    for stem, title in SECTIONS:
        path = report_dir / f"{group}_{stem}.md"
        if path.exists():
            parts.append(f"### {title}\n\n{path.read_text()}")
    for figure in ("J_vs_annotations", "reward_kl"):
        if (report_dir / f"{group}_{figure}.png").exists():
            parts.append(f"![{group} {figure}](docs/results/{name}/{group}_{figure}.png)\n")
    if (report_dir / "sweep_time.md").exists():
        parts.append(f"### Where the sweep's time went\n\n{(report_dir / 'sweep_time.md').read_text()}")
    return "\n".join(parts) + "\n"


def quoted_section(page: Path, title: str, heading: str, what: str, command: str) -> str:
    """A RESULTS.md section quoting one section of a page another command writes (its text up to the next
    `##`), linked; a pointer to the command when the page has not been written."""
    if not page.exists():
        return f"{title}\n\nNot run yet: `{command}` runs it and writes {page.name}.\n"
    text = page.read_text()
    start = text.find(heading)
    end = text.find("\n##", start + 1)  # its own bullets, not the subsections after them
    verdict = text[start : end if end > 0 else len(text)].split("\n", 1)[1].strip() if start >= 0 else ""
    link = f"docs/results/{page.name}"
    return f"{title}\n\nFrom [{link}]({link}) ({what}; `{command}`):\n\n{verdict}\n"


def gradients_section(page: Path) -> str:
    """The verdict of the exact gradient analysis (`make gradients` writes `page`)."""
    title = "## The paper's theory, tested exactly: does each sampler's DPO gradient point along grad J?"
    return quoted_section(page, title, "## Does it agree?", "method, table, figure, caveats", "make gradients")


def regimes_section(page: Path) -> str:
    """The regime map's verdicts per cell (`make regimes` writes `page`)."""
    title = "## When PILAF helps: the regime map"
    what = "grid, protocol, table, figure, the theorem's quantities"
    return quoted_section(page, title, "## What the map says", what, "make regimes")


def bursts_section(page: Path) -> str:
    """The findings of `python -m pilaf_exp.results.bursts` on a rerun of a burst (docs/results/bursts.md)."""
    if not page.exists():
        return ""
    findings = [line for line in page.read_text().splitlines() if line.startswith("* ")]
    link = f"docs/results/{page.name}"
    return (
        "## Why the curves burst: one burst, step by step\n\nA Table 3 run re-run with an evaluation and a "
        f"log line every step ([{link}]({link}) names it and tabulates the steps):\n\n" + "\n".join(findings) + "\n"
    )
