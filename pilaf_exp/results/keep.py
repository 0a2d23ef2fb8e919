"""The raw runs behind RESULTS.md, kept in the repository: per run its resolved config, summary.json,
evaluation history and timing, packed into one compressed archive per sweep (`results/kept/<sweep>.tar.xz`,
small: no checkpoint, ledger or policy). `unpack` puts them back as a runs tree the report and
`python -m pilaf_exp.results --only-write` read.

    python -m pilaf_exp.results.keep pack RUNS_DIR [--out results/kept]     # one archive per sweep below
    python -m pilaf_exp.results.keep unpack [--kept results/kept] --runs DIR
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEPT = ROOT / "results" / "kept"
FILES = ("config_resolved.yaml", "summary.json", "eval_history.csv", "timing.json", "done", "eval_error.json")


def kept_files(sweep: Path) -> list[Path]:
    """The files of a sweep worth keeping, relative to it, in a stable order."""
    return sorted(p.relative_to(sweep) for p in sweep.rglob("*") if p.is_file() and p.name in FILES)


def pack(sweep: Path, out: Path = KEPT) -> Path:
    """`sweep` (a directory of runs) -> out/<sweep name>.tar.xz; fixed metadata, so a repack of the
    same files is byte-identical."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{sweep.name}.tar.xz"
    with tarfile.open(target, "w:xz") as archive:
        for relative in kept_files(sweep):
            info = archive.gettarinfo(sweep / relative, arcname=f"{sweep.name}/{relative}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with (sweep / relative).open("rb") as handle:
                archive.addfile(info, handle)
    return target


def unpack_archive(archive_path: Path, runs: Path) -> Path:
    """One kept archive extracted below `runs`: returns its sweep's directory."""
    runs.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path) as archive:
        archive.extractall(runs, filter="data")
    return runs / archive_path.name.removesuffix(".tar.xz")


def unpack(kept: Path, runs: Path) -> list[Path]:
    """Every archive directly under `kept` extracted below `runs` (one directory per sweep)."""
    return [unpack_archive(archive_path, runs) for archive_path in sorted(kept.glob("*.tar.xz"))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pack or unpack the kept raw runs.")
    sub = parser.add_subparsers(dest="command", required=True)
    packing = sub.add_parser("pack")
    packing.add_argument("sweeps", type=Path, nargs="+", help="sweep directories (each a tree of runs)")
    packing.add_argument("--out", type=Path, default=KEPT)
    unpacking = sub.add_parser("unpack")
    unpacking.add_argument("--kept", type=Path, default=KEPT)
    unpacking.add_argument("--runs", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        missing = [s for s in args.sweeps if not s.is_dir()]
        if missing:
            print(f"error: not a directory: {missing[0]}", file=sys.stderr)
            sys.exit(2)
        for sweep in args.sweeps:
            print(f"wrote {pack(sweep, args.out)}")
    else:
        for sweep in unpack(args.kept, args.runs):
            print(f"unpacked {sweep}")


if __name__ == "__main__":
    main()
