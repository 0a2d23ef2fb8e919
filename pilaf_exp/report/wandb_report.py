"""The report to W&B (`python -m pilaf_exp.report DIR --wandb`): the sweep's tables as `wandb.Table`s
and its figures as images in one run of job type `report` in the sweep's W&B group, and the table
files (CSV, Markdown, LaTeX) as an artifact. Offline unless a key is given, like the runs."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from pilaf_exp.infra.loggers import wandb_mode
from pilaf_exp.infra.wandb_run import RESOLVED_CONFIG

DEFAULT_PROJECT = "pilaf_exp"
TABLE_FILES = (".csv", ".md", ".tex")


def run_dirs(runs_dir: Path) -> list[Path]:
    return sorted(path.parent for path in runs_dir.rglob("summary.json"))


def sweep_identity(runs: list[Path]) -> tuple[str, str | None]:
    """(W&B project, group) of the runs: their logger's project and the group they logged to
    (`wandb/group`, written by infra.loggers); the most common when they differ."""
    projects, groups = Counter(), Counter()
    for run in runs:
        if (run / RESOLVED_CONFIG).exists():
            project = OmegaConf.select(OmegaConf.load(run / RESOLVED_CONFIG), "logger.wandb.project")
            projects[project or DEFAULT_PROJECT] += 1
        if (run / "wandb" / "group").exists():
            groups[(run / "wandb" / "group").read_text().strip()] += 1
    if len(groups) > 1:
        print(f"note: the runs logged to {len(groups)} W&B groups; the report joins the most common")
    project = projects.most_common(1)[0][0] if projects else DEFAULT_PROJECT
    return project, groups.most_common(1)[0][0] if groups else None


def start_run(runs_dir: Path, report_dir: Path, project: str, group: str | None, runs: int) -> Any:
    """The report's W&B run; online when a key is given, offline if the server cannot be reached."""
    import wandb

    settings = {
        "project": project,
        "group": group,
        "job_type": "report",
        "name": f"report-{group or runs_dir.name}",
        "dir": str(report_dir),
        "config": {"runs": runs, "runs_dir": str(runs_dir.resolve())},
    }
    (report_dir / "wandb").mkdir(parents=True, exist_ok=True)
    mode = wandb_mode()
    try:
        return wandb.init(mode=mode, **settings)
    except Exception as error:  # network, auth, server: the report is on disk whatever W&B does
        if mode != "online":
            raise
        print(f"note: W&B online is unavailable ({type(error).__name__}): logging the report offline")
        return wandb.init(mode="offline", **settings)


def artifact_name(group: str | None, runs_dir: Path) -> str:
    return "report-" + re.sub(r"[^A-Za-z0-9_.-]", "_", group or runs_dir.name)


def log_report(runs_dir: Path, report_dir: Path, written: list[Path]) -> dict[str, Any]:
    """Log what `report.tables.write_report` wrote to `report_dir` (the paths it returned) for the
    runs below `runs_dir`; return where the W&B run went (id, project, group, mode, tables;
    offline files in <report_dir>/wandb)."""
    import wandb

    runs = run_dirs(runs_dir)
    project, group = sweep_identity(runs)
    run = start_run(runs_dir, report_dir, project, group, len(runs))
    row: dict[str, Any] = {}
    for path in written:
        if path.suffix == ".csv":  # the tables, from the very files (same numbers)
            row[f"tables/{path.stem}"] = wandb.Table(dataframe=pd.read_csv(path))
        elif path.suffix == ".png":
            row[f"figures/{path.stem}"] = wandb.Image(str(path), caption=path.stem.replace("_", " "))
    run.log(row)
    artifact = wandb.Artifact(artifact_name(group, runs_dir), type="report", description="the sweep's tables")
    for path in written:
        if path.suffix in TABLE_FILES:
            artifact.add_file(str(path))
    run.log_artifact(artifact)
    run.summary["runs"] = len(runs)
    where = {"id": run.id, "project": project, "group": group, "offline": bool(run.offline)}
    where["tables"] = [key for key in row if key.startswith("tables/")]
    run.finish()
    return where
