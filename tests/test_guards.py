"""Guards: a run fails fast on an output directory it cannot use, and stops on a NaN before it
reaches the weights, keeping the checkpoints it has."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.run import run


def test_an_unwritable_output_dir_fails_before_anything_is_built(small_cfg):
    with pytest.raises(ConfigError, match=r"output_dir=/proc/pilaf_run is not writable"):
        run(small_cfg(out="/proc/pilaf_run"))


def test_too_little_free_disk_fails_before_training(small_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"GB free, under min_free_disk_gb=1000000000000"):
        run(small_cfg("min_free_disk_gb=1e12", out=tmp_path / "run"))
    assert not list((tmp_path / "run").glob("*.json"))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "pilaf_exp",
        f"hydra.run.dir={run_dir}",
        "algo.lr=1e30",
        "algo.steps=8",
        "algo.batch_size=8",
        "algo.eval_every=4",
        "checkpoint.every_n_steps=1",
        "eval.exact_prompts=0",
        "logger=csv",
        "task.num_test_prompts=32",
        "oracle.calibration_prompts=256",
        "trainer.enable_progress_bar=false",
    ]
    result = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and ("is nan at step" in last or "is inf at step" in last), last
    assert "the last good checkpoint is" in last and "step_00000001.ckpt" in last
    assert (run_dir / "checkpoints" / "step_00000001.ckpt").exists()
    assert not (run_dir / "summary.json").exists()


@pytest.mark.slow
def test_an_unreachable_wandb_server_falls_back_to_offline(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    env = {
        **subprocess_env,
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "a" * 40,
        "WANDB_INIT_TIMEOUT": "5",
        "WANDB_BASE_URL": "http://127.0.0.1:9",
    }
    cmd = [
        sys.executable,
        "-m",
        "pilaf_exp",
        f"hydra.run.dir={run_dir}",
        "algo.steps=4",
        "algo.batch_size=8",
        "algo.eval_every=2",
        "eval.exact_prompts=0",
        "task.num_test_prompts=32",
        "oracle.calibration_prompts=256",
        "trainer.enable_progress_bar=false",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout + result.stderr
    assert said.count("W&B online is unavailable") == 1
    assert (run_dir / "summary.json").exists()
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    # The key is logged nowhere: not in what the run printed, wrote, or handed to W&B.
    key = ("a" * 40).encode()
    assert key.decode() not in said
    assert [p for p in run_dir.rglob("*") if p.is_file() and key in p.read_bytes()] == []
