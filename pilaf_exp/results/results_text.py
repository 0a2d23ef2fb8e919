"""RESULTS.md's text around the report's tables: provenance, the protocol, and each claim's verdict,
all read from files the report wrote (nothing typed)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pilaf_exp.infra.cli import BASELINE_SAMPLER
from pilaf_exp.results.protocol import MAX_J_DROP, MAX_KL_JUMP

CANDIDATE = "pilaf"  # the sampler whose claims RESULTS.md states a verdict on
# The report's tables a claim's section shows: (file stem after `<group>_`, title).
SECTIONS = (
    ("table", "Final policy"),
    ("curves", "Whole curves"),
    ("efficiency", "Annotations to reach vanilla's final J"),
)


def header(versions: dict[str, str], sweep_seconds: float, wall: float) -> str:
    produced = ", ".join(f"{name} {version}" for name, version in versions.items())
    return f"""# Results

Written by `make results` (`python -m pilaf_exp.results`) on {time.strftime("%Y-%m-%d")}: the
protocol sweep, the paper's claims on the embedded task, their reports; nothing below is typed by
hand. Produced by {produced}. The sweeps took {sweep_seconds / 60:.1f} min of wall time on this
machine (2 CPU cores); this rebuild {wall / 60:.1f} min. Every run is kept under `results/runs/`
(not in git); the report files are in `docs/results/<sweep>/`.

How to read the tables: J = reward - beta KL (beta 0.1). "exact" values are computed by enumerating
every response of the first 16 test prompts (no sampling noise); "sampled" ones come from 256 test
prompts. Intervals are 95% Student-t intervals over seeds; comparisons with {BASELINE_SAMPLER} are
paired by seed (same prompts, same start). A sampler is called better or worse only when the paired
interval excludes zero; otherwise it is a tie. Seeds 0-9 were fixed before any run.

"""


def protocol_section(report_dir: Path, lr: float) -> str:
    rule = (report_dir / "protocol_rule.md").read_text()
    return f"""## Protocol (fixed before the sampler comparisons)

Online DPO, 300 steps of 64 pairs (38,400 annotations), beta 0.1, AdamW without weight decay,
Bradley-Terry labels; 10 seeds per sampler (0-9). The learning rate is the only value chosen, on
protocol seeds 100-102 that no table uses, from vanilla's runs alone, by this rule: the largest lr of
{{1e-4, 2e-4, 3e-4}} at which vanilla, in every protocol seed, never loses more than {MAX_J_DROP} of
exact J between consecutive exact evaluations (every 100 steps) and never jumps by more than
{MAX_KL_JUMP} nats of sampled KL between consecutive evaluations (every 25 steps); the smallest lr when
none qualifies. The embedded task itself was not changed. Vanilla's worst drop and jump per lr:

{rule}
Chosen: **lr = {lr:g}**. PILAF's runs at the same grid (not read by the rule) show the sensitivity:
![lr sensitivity](docs/results/protocol_lr/protocol_lr_sensitivity.png)

"""


def verdict(table: Path) -> str:
    """Reproduces / refutes / cannot tell, from the endpoint table's paired J difference."""
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
    return f"**cannot tell**: the paired difference {interval} over {pairs} holds zero (a tie)"


def claim_section(name: str, claim: str, report_dir: Path, sweep_dir: Path) -> str:
    group = name
    parts = [
        f"## {claim}\n",
        f"Sweep `{name}` ({sweep_dir}). Verdict on the final J: {verdict(report_dir / f'{group}_table.csv')}.\n",
    ]
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


def gradients_section(page: Path) -> str:
    """The verdict of the exact gradient analysis (`make gradients` writes `page`), linked; a pointer
    to the command when it has not been run."""
    title = "## The paper's theory, tested exactly: does each sampler's DPO gradient point along grad J?"
    if not page.exists():
        return f"{title}\n\nNot run yet: `make gradients` runs it and writes {page.name}.\n"
    text = page.read_text()
    start = text.find("## Does it agree?")
    end = text.find("\n##", start + 1)  # its own bullets, not the subsections after them
    verdict = text[start : end if end > 0 else len(text)].split("\n", 1)[1].strip() if start >= 0 else ""
    link = f"docs/results/{page.name}"
    return f"{title}\n\nFrom [{link}]({link}) (method, table, figure, caveats; `make gradients`):\n\n{verdict}\n"


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
