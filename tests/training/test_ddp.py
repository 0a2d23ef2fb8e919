"""trainer=ddp_cpu: two CPU processes (gloo) run online DPO on different prompts and end with
identical policy weights; evaluation and annotation counts are summed over both ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import datasets
import pytest


@pytest.mark.slow
def test_two_process_ddp_samples_different_prompts_and_agrees_on_weights(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "pilaf_exp",
        f"hydra.run.dir={run_dir}",
        "trainer=ddp_cpu",
        "sampler=pilaf",
        "algo.steps=4",
        "algo.batch_size=8",
        "algo.eval_every=2",
        "eval.exact_prompts=0",
        "logger=csv",
        "task.num_test_prompts=32",
        "oracle.calibration_prompts=256",
        "trainer.enable_progress_bar=false",
        "algo.lr=3e-3",  # 4 steps at the default rate move the policy less than the KL estimate's noise
    ]
    result = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [json.loads((run_dir / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["policy_sha256"] == ranks[1]["policy_sha256"]  # DDP kept the replicas identical

    prompts = [datasets.load_from_disk(str(run_dir / "preferences" / f"rank_{r}"))["prompt"] for r in (0, 1)]
    assert len(prompts[0]) == len(prompts[1]) == 4 * 8
    # One seeded stream cut between the ranks: no prompt was sampled by both.
    assert not {tuple(p) for p in prompts[0]} & {tuple(p) for p in prompts[1]}

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["annotations/total"] == 2 * 4 * 8 * 2  # both ranks' pairs
    assert summary["eval/kl"] > 1e-4  # the shared policy moved away from the reference


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_result(tmp_path, subprocess_env):
    """kill -9 of both ranks mid-run; the rerun resumes each rank from the shared checkpoint and
    its own ledger, and ends with the uninterrupted run's summary and weights."""

    def cmd(run_dir) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pilaf_exp",
            f"hydra.run.dir={run_dir}",
            "trainer=ddp_cpu",
            "sampler=pilaf",
            "algo.steps=6",
            "algo.batch_size=8",
            "algo.eval_every=2",
            "checkpoint.every_n_steps=2",
            "eval.exact_prompts=0",
            "logger=csv",
            "task.num_test_prompts=32",
            "oracle.calibration_prompts=256",
            "trainer.enable_progress_bar=false",
        ]

    whole = subprocess.run(cmd(tmp_path / "whole"), env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]

    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        cmd(run_dir), env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ledgers = [run_dir / "ledger" / f"rank_{r}" for r in (0, 1)]
    while min(len(list(d.glob("step_*.pt"))) for d in ledgers) < 4 and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None
    os.killpg(process.pid, signal.SIGKILL)  # both ranks at once
    process.wait(timeout=60)
    assert (run_dir / "checkpoints" / "step_00000002.ckpt").exists()

    resumed = subprocess.run(cmd(run_dir), env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (tmp_path / "whole", run_dir)]
    assert summaries[0] == summaries[1]
    hashes = [
        json.loads((d / "ranks" / "rank_1.json").read_text())["policy_sha256"] for d in (tmp_path / "whole", run_dir)
    ]
    assert hashes[0] == hashes[1]


DDP_RUN = [
    "trainer=ddp_cpu",
    "sampler=pilaf",
    "algo.steps=8",
    "algo.batch_size=8",
    "algo.eval_every=4",
    "checkpoint.every_n_steps=4",
    "eval.exact_prompts=0",
    "logger=csv",
    "task.num_test_prompts=32",
    "oracle.calibration_prompts=256",
    "trainer.enable_progress_bar=false",
]


@pytest.mark.slow
def test_sigterm_to_a_two_process_run_always_exits_and_resumes_to_the_same_result(tmp_path, subprocess_env):
    """SIGTERM to the process group at random points: both ranks decide to stop together at one batch
    boundary, save one checkpoint, exit 0 within 60 s, and the rerun ends as the uninterrupted run."""
    import random

    def cmd(run_dir) -> list[str]:
        return [sys.executable, "-m", "pilaf_exp", f"hydra.run.dir={run_dir}", *DDP_RUN]

    whole = subprocess.run(cmd(tmp_path / "whole"), env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = json.loads((tmp_path / "whole" / "summary.json").read_text())
    chooser = random.Random(0)
    for trial in range(5):
        run_dir = tmp_path / f"trial_{trial}"
        ledgers = [run_dir / "ledger" / f"rank_{r}" for r in (0, 1)]
        after = chooser.randint(1, 7)  # labelled steps on both ranks before the signal
        process = subprocess.Popen(
            cmd(run_dir),
            env=subprocess_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        while min(len(list(d.glob("step_*.pt"))) for d in ledgers) < after and process.poll() is None:
            time.sleep(0.02)
        if process.poll() is not None:  # finished before the signal: nothing to test in this trial
            continue
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)  # exits within 60 s: no rank waits for the other
        assert process.returncode == 0, stderr[-3000:]
        resumed = subprocess.run(cmd(run_dir), env=subprocess_env, capture_output=True, text=True, timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads((run_dir / "summary.json").read_text()) == expected


@pytest.mark.slow
def test_fewer_test_prompts_than_ranks_leaves_an_empty_shard_that_adds_nothing(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    overrides = [o for o in DDP_RUN if not o.startswith("task.num_test_prompts")]
    cmd = [
        sys.executable,
        "-m",
        "pilaf_exp",
        f"hydra.run.dir={run_dir}",
        *overrides,
        "task.num_test_prompts=1",
        "algo.steps=2",
        "algo.eval_every=1",
        "eval.samples_per_prompt=4",
    ]
    result = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    history = (run_dir / "eval_history.csv").read_text().splitlines()
    assert len(history) == 1 + 3  # steps 0, 1, 2, each averaged over rank 0's 4 responses only
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["eval/kl"] == summary["eval/kl"]  # a number, not NaN
