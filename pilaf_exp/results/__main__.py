"""`make results`: every sweep behind RESULTS.md, the report of each, and RESULTS.md itself.

    python -m pilaf_exp.results [--runs DIR] [--only-write] [--jobs 2]

1. the protocol sweep (`sweeps/protocol_lr.yaml`) and its rule (`results.protocol`), which picks
   the learning rate from vanilla alone;
2. the paper's claims at that learning rate, ten seeds each: Table 3 (online), Table 2 (iterative),
   Fig. 4 (overfitted start);
3. `python -m pilaf_exp.report` on each, copied to docs/results/<sweep>/, and RESULTS.md written
   from them, with the verdict of the gradient analysis (docs/results/gradients.md, `make gradients`):
   no number in it is typed. Every run is kept under --runs (default results/runs/<date>).

With --only-write, nothing runs: RESULTS.md is rebuilt from the runs already under --runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from pilaf_exp.results.results_text import bursts_section, claim_section, gradients_section, header, protocol_section

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "results"
PROTOCOL_EXACT_EVERY = 100  # the claims' exact schedule, fixed with the protocol (0, 100, 200, 300 steps)
CLAIMS = {  # sweep -> the paper's claim it tests
    "table3_online": "Table 3 (online DPO): PILAF reaches a higher J than vanilla sampling",
    "table2_iterative": "Table 2 (iterative DPO): PILAF reaches a higher J than vanilla sampling",
    "fig4_overfitted": "Fig. 4 (online DPO from an overfitted policy): PILAF improves on vanilla sampling",
}


def sweep(name: str, root: Path, jobs: int, *overrides: str) -> Path:
    """Run one sweep (unless its directory is already complete) and return its directory."""
    target = root / name
    if (target / "done").exists():
        return target
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    command = [
        sys.executable,
        "-m",
        "pilaf_exp",
        "-m",
        f"+sweep={name}",
        *launcher,
        "logger=csv",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={target}",
        *overrides,
    ]
    print("+", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    (target / "done").write_text(json.dumps({"seconds": time.perf_counter() - started, "command": command[1:]}))
    return target


def report(sweep_dir: Path) -> Path:
    """`python -m pilaf_exp.report` on one sweep, its outputs copied to docs/results/<sweep>/."""
    subprocess.run(
        [sys.executable, "-m", "pilaf_exp.report", str(sweep_dir)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    target = DOCS / sweep_dir.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(sweep_dir / "report", target)
    return target


def chosen_lr(protocol_dir: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "pilaf_exp.results.protocol", str(protocol_dir)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    shutil.rmtree(DOCS / "protocol_lr", ignore_errors=True)
    shutil.copytree(protocol_dir / "report", DOCS / "protocol_lr")
    return float(out.strip().splitlines()[-1].removeprefix("lr="))


def provenance() -> dict[str, str]:
    import lightning
    import torch
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "pilaf_exp", "conf", "sweeps"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "commit": commit.stdout.strip() + (" (with uncommitted changes)" if dirty else ""),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
        "pandas": pd.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs" / time.strftime("%Y-%m-%d"))
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (joblib; each gets its share of cores)")
    parser.add_argument("--only-write", action="store_true", help="rebuild RESULTS.md from the runs already there")
    parser.add_argument("--sweeps", nargs="+", default=list(CLAIMS), help="which claims to run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    protocol_dir = args.runs / "protocol_lr" if args.only_write else sweep("protocol_lr", args.runs, args.jobs)
    lr = chosen_lr(protocol_dir)
    sections = [protocol_section(DOCS / "protocol_lr", lr)]
    for name in args.sweeps:
        sweep_dir = args.runs / name
        if not args.only_write:
            # Exact J every 100 steps as the recorded protocol had it: the curve metrics read exact points.
            sweep(name, args.runs, args.jobs, f"algo.lr={lr:g}", f"eval.exact_every={PROTOCOL_EXACT_EVERY}")
        if (sweep_dir / "done").exists():
            sections.append(claim_section(name, CLAIMS[name], report(sweep_dir), sweep_dir))
        else:
            finished = len(list(sweep_dir.rglob("summary.json"))) if sweep_dir.exists() else 0
            sections.append(
                f"## {CLAIMS[name]}\n\nNot run to the end yet ({finished} runs finished under {sweep_dir}; "
                "an unfinished sweep is not evidence and gets no table): `make results` runs it.\n"
            )
    sections.append(bursts_section(DOCS / "bursts.md"))
    sections.append(gradients_section(DOCS / "gradients.md"))
    seconds = sum(json.loads((d / "done").read_text())["seconds"] for d in args.runs.glob("*") if (d / "done").exists())
    text = header(provenance(), seconds, time.perf_counter() - started) + "\n".join(sections)
    history = DOCS / "history.md"
    if history.exists():
        text += "\n" + history.read_text()
    (ROOT / "RESULTS.md").write_text(text)
    print(f"wrote {ROOT / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
