"""One multirun of `python -m pilaf_exp` for the RESULTS pipeline: run once, marked done with its time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def head_commit() -> str:
    """The repository's HEAD, short ('' outside a git checkout)."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def multirun(target: Path, overrides: list[str], jobs: int) -> Path:
    """`python -m pilaf_exp -m <overrides>` into `target` (2 joblib jobs when `jobs` > 1), CSV logging;
    skipped when `target/done` says it already ran, which then holds its time, command and commit."""
    if (target / "done").exists():
        return target
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    command = [sys.executable, "-m", "pilaf_exp", "-m", *overrides, *launcher, "logger=csv"]
    command += ["trainer.enable_progress_bar=false", f"hydra.sweep.dir={target}"]
    print("+", " ".join(command[1:]), flush=True)
    commit = head_commit()
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    done = {"seconds": time.perf_counter() - started, "command": command[1:], "commit": commit}
    (target / "done").write_text(json.dumps(done))
    return target
