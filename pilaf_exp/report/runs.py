"""A sweep's runs as the report reads them: every run below a directory (its summary, its
evaluations) and one run's evaluations at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


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


def runs_of(history: pd.DataFrame) -> Iterator[tuple[dict, pd.DataFrame]]:
    """({sampler, seed, run_dir}, its evaluations by step) for every run of `load_runs`' histories: a run
    is one directory, so a re-run of a sampler and seed in the same tree is a second run, not one merged history."""
    keys = ["sampler", "seed", "run_dir"] if "run_dir" in history else ["sampler", "seed"]
    for key, rows in history.groupby(keys, sort=True):
        yield dict(zip(keys, key)), rows.sort_values("step")
