"""Where a sweep's time went: each run's `timing.json` (its phases, as the run's stopwatch split
them) summed per sampler and over the sweep, and the sweep's wall time when `make results` recorded
it (`<sweep>/done`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pilaf_exp.infra.names import PHASES, TOTAL
from pilaf_exp.report.markdown import markdown_table


def run_times(root: Path) -> pd.DataFrame:
    """One row per run: sampler, threads and the seconds of each phase and in total."""
    rows = []
    for path in sorted(root.rglob("timing.json")):
        summary_file = path.parent / "summary.json"
        if not summary_file.exists():
            continue  # an unfinished run
        timing, summary = json.loads(path.read_text()), json.loads(summary_file.read_text())
        rows.append(
            {
                "sampler": summary["sampler"],
                "threads": timing.get("threads"),
                TOTAL: timing[TOTAL],
                **{phase: timing.get(phase, 0.0) for phase in PHASES},
            }
        )
    return pd.DataFrame(rows)


def time_table(root: Path) -> str:
    """Markdown: per sampler, runs and the summed minutes of each phase; a total row; the wall time."""
    runs = run_times(root)
    if runs.empty:
        return ""
    columns = [*PHASES, TOTAL]
    per_sampler = runs.groupby("sampler")[columns].sum() / 60
    per_sampler.insert(0, "runs", runs.groupby("sampler").size())
    per_sampler.loc["all"] = [len(runs), *(runs[columns].sum() / 60)]
    header = ["sampler", "runs", *[f"{c} (min)" for c in columns]]
    rows = [[name, int(row["runs"]), *(f"{row[c]:.1f}" for c in columns)] for name, row in per_sampler.iterrows()]
    threads = ", ".join(str(t) for t in sorted(runs["threads"].dropna().unique()))
    note = f"Run time summed over runs (threads per run: {threads or 'not recorded'})"
    done = root / "done"
    if done.exists():
        note += f"; the sweep's wall time: {json.loads(done.read_text())['seconds'] / 60:.1f} min"
    return markdown_table(header, rows) + "\n" + note + ".\n"
