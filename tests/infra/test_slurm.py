"""A sweep submitted to a real SLURM cluster (scripts/slurm_local.sh starts a one-node one)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

import pytest


def slurm_available() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


@pytest.fixture
def slurm_cluster() -> None:
    if not slurm_available():
        if os.environ.get("PILAF_REQUIRE_SLURM") == "1":
            pytest.fail("PILAF_REQUIRE_SLURM=1 but no SLURM cluster answers: run `bash scripts/slurm_local.sh start`")
        pytest.skip("no SLURM cluster (start one with `bash scripts/slurm_local.sh start`)")


@pytest.mark.slow
def test_two_run_sweep_runs_as_slurm_jobs(slurm_cluster, tmp_path, subprocess_env):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pilaf_exp",
            "-m",
            "hydra/launcher=slurm",
            "sampler=vanilla,pilaf",
            "logger=csv",
            "algo.steps=6",
            "algo.batch_size=8",
            "algo.eval_every=3",
            "task.num_test_prompts=32",
            "eval.exact_prompts=0",
            "hydra.launcher.timeout_min=20",
            "hydra.launcher.mem_gb=2",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = {json.loads((sweep_dir / str(job) / "summary.json").read_text())["sampler"] for job in (0, 1)}
    assert summaries == {"vanilla", "pilaf"}
    for job in (0, 1):
        summary = json.loads((sweep_dir / str(job) / "summary.json").read_text())
        assert math.isfinite(summary["eval/J"])
    # The runs really were SLURM jobs: submitit's job folders are named by SLURM array job id, and
    # the controller knows those jobs and their output files (finished jobs stay listed 5 minutes).
    job_dirs = [p for p in (sweep_dir / ".submitit").iterdir() if p.is_dir() and "_" in p.name]
    assert len(job_dirs) == 2
    for job_dir in job_dirs:
        shown = subprocess.run(["scontrol", "show", "job", job_dir.name], capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr
        assert f"StdOut={job_dir}" in shown.stdout and "Partition=debug" in shown.stdout, shown.stdout


@pytest.mark.slow
def test_a_requeued_sweep_job_resumes_from_its_checkpoint(slurm_cluster, tmp_path, subprocess_env):
    """`scontrol requeue` on a running job: SLURM stops it (SIGTERM: checkpoint and exit), starts it
    again, and the run resumes to the same result as an uninterrupted one."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "training"))  # run alone: not yet there
    from test_resume import RUN, ledger_entries, same_result

    whole = tmp_path / "whole"
    local = subprocess.run(
        [sys.executable, "-m", "pilaf_exp", f"hydra.run.dir={whole}", *RUN],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert local.returncode == 0, local.stderr[-3000:]

    sweep_dir = tmp_path / "sweep"
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pilaf_exp",
            "-m",
            "hydra/launcher=slurm",
            *RUN,
            "hydra.launcher.timeout_min=20",
            "hydra.launcher.mem_gb=2",
            "hydra.launcher.cpus_per_task=2",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = sweep_dir / "0"
    deadline = time.monotonic() + 900
    while ledger_entries(run_dir) < 10 and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sweep.poll() is None, sweep.communicate()[1][-3000:]
    job = next(p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir())  # one run: no array
    requeued = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    assert requeued.returncode == 0, requeued.stderr
    out, err = sweep.communicate(timeout=1500)
    assert sweep.returncode == 0, err[-3000:]
    assert "resumed_from" in json.loads((run_dir / "timing.json").read_text())
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=1" in shown, shown
    same_result(whole, run_dir)
