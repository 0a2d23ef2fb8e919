"""`python -m pilaf_exp.report <multirun dir> [--out DIR]`: tables and figures from a sweep's runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pilaf_exp.report.tables import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tables and figures from pilaf_exp runs.")
    parser.add_argument("runs", type=Path, help="a multirun directory (searched recursively for summary.json)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <runs>/report)")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.runs, args.out or args.runs / "report")
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {len(written)} files to {(args.out or args.runs / 'report')}")


if __name__ == "__main__":
    main()
