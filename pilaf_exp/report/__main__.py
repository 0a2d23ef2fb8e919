"""`python -m pilaf_exp.report <multirun dir> [--out DIR] [--wandb [--workspace]]`: tables and figures
from a sweep's runs, and with --wandb the same in one W&B run of the sweep's group (README: W&B)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pilaf_exp.report.tables import write_report


def to_wandb(runs: Path, out: Path, written: list[Path], with_workspace: bool) -> None:
    from pilaf_exp.report.wandb_report import log_report  # W&B only when asked for

    logged = log_report(runs, out, written)
    where = f"offline: upload with `wandb sync {out / 'wandb'}/offline-run-*`" if logged["offline"] else "online"
    print(f"logged the report to W&B run {logged['id']} (group {logged['group']}, {where})")
    if with_workspace:
        from pilaf_exp.report.wandb_workspace import save_workspace

        print(save_workspace(out, logged["project"], logged["group"], logged["tables"], logged["offline"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tables and figures from pilaf_exp runs.")
    parser.add_argument("runs", type=Path, help="a multirun directory (searched recursively for summary.json)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <runs>/report)")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the tables, figures and table files to one W&B run of job type `report` in "
        "the sweep's group (offline unless WANDB_API_KEY is set)",
    )
    parser.add_argument(
        "--workspace",
        action="store_true",
        help="with --wandb: save a W&B workspace view of the sweep (offline: write its spec, "
        "wandb_workspace.json, to the report directory)",
    )
    args = parser.parse_args(argv)
    if args.workspace and not args.wandb:
        parser.error("--workspace goes with --wandb")
    out = args.out or args.runs / "report"
    try:
        written = write_report(args.runs, out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {len(written)} files to {out}")
    if args.wandb:
        to_wandb(args.runs, out, written, args.workspace)


if __name__ == "__main__":
    main()
