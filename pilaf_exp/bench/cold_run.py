"""A newcomer's first run, timed: `python -m pilaf_exp` on an empty cache directory, several times.

    python -m pilaf_exp.bench.cold_run [--runs 5] [ARGS ...]      # make bench-cold

Each run gets its own fresh `PILAF_CACHE_DIR` (so the SFT reference and the exact table are built
from nothing, as on a fresh machine) and W&B offline; the figure is the run's own wall time
(`timing.json` "total", what the run prints) and the process's, with the median over the runs and the
phase split of the median run. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("setup", "optimum", "sampling", "labelling", "training", "evaluation")


def one_cold_run(extra: list[str]) -> dict[str, float]:
    """One run on an empty cache directory; its timing.json plus the process's wall time."""
    with tempfile.TemporaryDirectory(prefix="pilaf_cold_") as cache:
        env = {**os.environ, "PILAF_CACHE_DIR": cache, "WANDB_MODE": "offline"}
        run_dir = Path(cache) / "run"
        command = [sys.executable, "-m", "pilaf_exp", f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
        started = time.perf_counter()
        subprocess.run(command + extra, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        process = time.perf_counter() - started
        timing = json.loads((run_dir / "timing.json").read_text())
        return {"process": process, **{k: v for k, v in timing.items() if isinstance(v, float)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold runs (the median is the figure)")
    parser.add_argument("args", nargs="*", help="Hydra overrides passed to every run")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs={args.runs} is not accepted: expected >= 1")
    runs = []
    for index in range(args.runs):
        runs.append(one_cold_run(args.args))
        print(f"cold run {index + 1}: run {runs[-1]['total']:.1f} s, process {runs[-1]['process']:.1f} s", flush=True)
    totals = [run["total"] for run in runs]
    median_run = sorted(runs, key=lambda run: run["total"])[len(runs) // 2]
    print(
        f"run wall time over {len(runs)} cold runs: median {statistics.median(totals):.1f} s "
        f"(min {min(totals):.1f}, max {max(totals):.1f}); process median "
        f"{statistics.median(run['process'] for run in runs):.1f} s"
    )
    split = " + ".join(f"{phase} {median_run.get(phase, 0.0):.1f}" for phase in PHASES)
    print(f"the median run: {median_run['total']:.1f} s = {split}")


if __name__ == "__main__":
    main()
