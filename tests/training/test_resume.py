"""Killed at any moment, a run resumes where it stopped and ends exactly as if it never had:
same summary, same policy weights (bitwise, CPU), every labelled pair in the ledger once."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from safetensors.torch import load_file

RUN = [
    "sampler=pilaf",
    "algo.steps=12",
    "algo.batch_size=8",
    "algo.micro_batch_size=4",
    "algo.eval_every=3",
    "checkpoint.every_n_steps=4",
    "eval.exact_prompts=0",
    "logger=csv",
    "task.num_test_prompts=32",
    "oracle.calibration_prompts=256",
    "trainer.enable_progress_bar=false",
    "save_policy=true",
]


def command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pilaf_exp", f"hydra.run.dir={run_dir}", *RUN, *extra]


def ledger_entries(run_dir: Path) -> int:
    return len(list((run_dir / "ledger" / "rank_0").glob("step_*.pt")))


def run_to_end(run_dir: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(command(run_dir), env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def interrupt(run_dir: Path, env: dict, after_entries: int, sig: signal.Signals) -> int:
    """Start the run, send `sig` once it has labelled `after_entries` micro-batches; its exit code."""
    process = subprocess.Popen(command(run_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while ledger_entries(run_dir) < after_entries and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(sig)
    process.communicate(timeout=300)
    assert not (run_dir / "summary.json").exists()
    return process.returncode


def same_result(a: Path, b: Path) -> None:
    assert json.loads((a / "summary.json").read_text()) == json.loads((b / "summary.json").read_text())
    weights_a, weights_b = load_file(a / "policy" / "model.safetensors"), load_file(b / "policy" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all((weights_a[k] == weights_b[k]).all() for k in weights_a)  # bitwise
    pairs_a = datasets.load_from_disk(str(a / "preferences")).to_dict()
    pairs_b = datasets.load_from_disk(str(b / "preferences")).to_dict()
    assert pairs_a == pairs_b  # each pair once, in order: none lost, repeated or re-labelled
    assert ledger_entries(b) == 12 * 2


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, sft_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    env = {**__import__("os").environ, "PILAF_CACHE_DIR": str(sft_cache), "WANDB_MODE": "offline"}
    run_to_end(run_dir, env)
    return run_dir


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_gives_the_same_run(uninterrupted, tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    after = random.Random().randint(5, 21)  # micro-batches labelled before the kill (of 24)
    assert interrupt(run_dir, subprocess_env, after, signal.SIGKILL) == -signal.SIGKILL
    result = run_to_end(run_dir, subprocess_env)
    timing = json.loads((run_dir / "timing.json").read_text())
    # The step-4 checkpoint (every 4 steps = 8 micro-batches) is saved after step 4 trains, i.e. after the
    # 8th micro-batch is labelled and before the 9th is: only from 9 on must one exist at the kill.
    if after >= 9:
        assert "resumed_from" in timing, result.stdout[-2000:]
    same_result(uninterrupted, run_dir)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_cleanly_and_resumes(uninterrupted, tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    assert interrupt(run_dir, subprocess_env, 11, signal.SIGTERM) == 0
    saved = sorted((run_dir / "checkpoints").glob("step_*.ckpt"))
    # Signalled after 11 micro-batches (mid-step 5): besides step 4's scheduled checkpoint, one is written
    # where the signal found the run (step 5 or 6, depending on how fast the signal lands).
    assert saved[0].name == "step_00000004.ckpt" and len(saved) == 2
    at_signal = int(saved[-1].stem.split("_")[1])
    assert 4 < at_signal < 8
    run_to_end(run_dir, subprocess_env)
    assert f"(step {at_signal})" in json.loads((run_dir / "timing.json").read_text())["resumed_from"]
    same_result(uninterrupted, run_dir)


@pytest.mark.slow
def test_a_truncated_latest_checkpoint_falls_back_to_the_one_before(uninterrupted, tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    interrupt(run_dir, subprocess_env, 19, signal.SIGKILL)  # checkpoints at steps 4 and 8 exist
    saved = sorted((run_dir / "checkpoints").glob("step_*.ckpt"))
    assert [p.name for p in saved] == ["step_00000004.ckpt", "step_00000008.ckpt"]
    saved[-1].write_bytes(saved[-1].read_bytes()[:1000])  # truncated
    result = run_to_end(run_dir, subprocess_env)
    assert "unreadable" in result.stdout + result.stderr
    assert "step 4" in json.loads((run_dir / "timing.json").read_text())["resumed_from"]
    same_result(uninterrupted, run_dir)


def test_no_readable_checkpoint_stops_rather_than_starting_over(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_00000004.ckpt").write_bytes(b"not a checkpoint")
    result = subprocess.run(command(run_dir), env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "no readable checkpoint" in result.stderr.strip().splitlines()[-1]


ITERATIVE = [
    "algo=iterative",
    "algo.iterations=3",
    "algo.prompts_per_iteration=32",
    "algo.sample_batch_size=8",
    "algo.batch_size=8",
    "algo.micro_batch_size=null",
    "algo.eval_every=2",
    "algo.vanilla_first_iteration=false",
    "checkpoint.every_n_steps=3",
    "sampler=pilaf",
    "eval.exact_prompts=0",
    "logger=csv",
    "task.num_test_prompts=32",
    "oracle.calibration_prompts=256",
    "trainer.enable_progress_bar=false",
    "save_policy=true",
]


@pytest.mark.slow
def test_kill_9_of_an_iterative_run_then_resume_gives_the_same_run(tmp_path, subprocess_env):
    """Three rounds of 4 sampling batches and 4 DPO steps; killed once a random number of sampling
    batches of rounds 2-3 are in the ledger (mid-collection or mid-training), then resumed."""

    def cmd(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "pilaf_exp", f"hydra.run.dir={run_dir}", *ITERATIVE]

    whole = tmp_path / "whole"
    done = subprocess.run(cmd(whole), env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    run_dir = tmp_path / "run"
    after = random.Random().randint(5, 11)  # ledger files: 4 per round
    process = subprocess.Popen(cmd(run_dir), env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while len(list((run_dir / "ledger").glob("*/step_*.pt"))) < after and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None
    process.kill()
    process.communicate(timeout=120)
    resumed = subprocess.run(cmd(run_dir), env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert json.loads((whole / "summary.json").read_text()) == json.loads((run_dir / "summary.json").read_text())
    weights_a, weights_b = (
        load_file(whole / "policy" / "model.safetensors"),
        load_file(run_dir / "policy" / "model.safetensors"),
    )
    assert all((weights_a[k] == weights_b[k]).all() for k in weights_a)
    for iteration in (1, 2, 3):
        path = f"preferences/iteration_{iteration}"
        assert (
            datasets.load_from_disk(str(whole / path)).to_dict()
            == datasets.load_from_disk(str(run_dir / path)).to_dict()
        )


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["collecting", "training"])
def test_kill_9_while_building_the_shared_first_round_then_resume(tmp_path, subprocess_env, phase):
    """The paper protocol's round 1 (vanilla, cached for every sampler) is built inside the run
    that first needs it; killed while labelling or training it, the run resumes it too."""
    protocol = [o for o in ITERATIVE if not o.startswith("algo.vanilla_first_iteration")]

    def cmd(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "pilaf_exp", f"hydra.run.dir={run_dir}", *protocol]

    def env(name: str) -> dict[str, str]:  # own caches, so both runs build round 1 themselves
        return {**subprocess_env, "PILAF_CACHE_DIR": str(tmp_path / f"cache_{name}")}

    done = subprocess.run(cmd(tmp_path / "whole"), env=env("whole"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    run_dir = tmp_path / "run"
    process = subprocess.Popen(cmd(run_dir), env=env("run"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def reached() -> bool:
        if phase == "collecting":
            return len(list((run_dir / "ledger").glob("*/step_*.pt"))) >= 2
        return (run_dir / "checkpoints" / "step_00000003.ckpt").exists()

    while not reached() and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None
    process.kill()
    process.communicate(timeout=120)
    resumed = subprocess.run(cmd(run_dir), env=env("run"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    again = json.loads((run_dir / "summary.json").read_text())
    assert whole == again  # round1/checkpoint_sha256 included: the same round-1 model, byte for byte
