"""trainer=fsdp_cpu: the sharded path (trainer=fsdp's strategy) on two CPU processes (gloo), from the
command line: online DPO with every sampler on the embedded task, iterative DPO, and the text path with a
tokenizer that has EOS and evaluation shards of unequal size. Rows stopping at different steps on
the two ranks are checked bit for bit in tests/sampling/test_sharded_decoding.py. A hang fails the
test through the subprocess timeout."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from hf_fixtures import save_policy, save_reward_model, write_hh_jsonl
from transformers import AutoTokenizer

TIMEOUT = 900  # seconds: a run whose ranks wait for each other is killed and fails
EMBEDDED = [
    "algo.steps=3",
    "algo.batch_size=4",
    "algo.eval_every=1",
    "algo.lr=3e-3",
    "eval.exact_prompts=0",
    "logger=csv",
    "task.num_test_prompts=32",  # as tests/training/test_ddp.py: the same cached SFT model
    "oracle.calibration_prompts=256",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


def launch(run_dir: Path, env: dict, *overrides: str) -> dict:
    cmd = [sys.executable, "-m", "pilaf_exp", f"hydra.run.dir={run_dir}", *overrides]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


def rank_reports(run_dir: Path) -> list[dict]:
    return [json.loads((run_dir / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]


def losses(run_dir: Path) -> list[float]:
    rows = csv.DictReader(next(run_dir.rglob("metrics.csv")).open())
    return [float(row["train/loss"]) for row in rows if row.get("train/loss")]


def moved(run_dir: Path) -> bool:
    """The DPO loss starts at ln 2 (policy = reference) and has left it by the last step."""
    loss = losses(run_dir)
    return loss[0] == pytest.approx(math.log(2), abs=1e-6) and abs(loss[-1] - math.log(2)) > 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["vanilla", "best_of_n", "hybrid"])
def test_fsdp_cpu_runs_online_dpo_with_each_sampler(tmp_path, subprocess_env, sampler):
    summary = launch(tmp_path, subprocess_env, "trainer=fsdp_cpu", f"sampler={sampler}", *EMBEDDED)
    assert summary["world_size"] == 2 and summary["annotations/total"] == 2 * 3 * 4 * 2
    ranks = rank_reports(tmp_path)
    assert ranks[0]["policy_sha256"] == ranks[1]["policy_sha256"]  # full weights on both ranks after fit
    assert moved(tmp_path)


@pytest.mark.slow
def test_fsdp_cpu_pilaf_gives_ddp_s_pairs_and_losses(tmp_path, subprocess_env):
    """FSDP against DDP on the same prompts and noise: the same weights before the first step, so
    the first step's pairs are the same tokens; every step's loss agrees to float rounding (the
    two average gradients in a different order)."""
    runs = {name: tmp_path / name for name in ("fsdp_cpu", "ddp_cpu")}
    # DDP decodes through the models' own forward too, as FSDP must: the same arithmetic. Exact
    # evaluation on 3 prompts (2 on rank 0, 1 on rank 1: rank 1 walks one more to keep the collectives
    # in step): under FSDP the walk gathers the weights through the model's own forward, where
    # DDP's full weights take the lean path (evaluation/leaves.py).
    embedded = [a for a in EMBEDDED if not a.startswith("eval.exact_prompts")] + ["eval.exact_prompts=3"]
    same = ["sampler=pilaf", "model.generation.engine=transformers", *embedded]
    summaries = {name: launch(d, subprocess_env, f"trainer={name}", *same) for name, d in runs.items()}
    for rank in (0, 1):
        first = [datasets.load_from_disk(str(d / "preferences" / f"rank_{rank}"))[:4] for d in runs.values()]
        assert first[0] == first[1]
    assert losses(runs["fsdp_cpu"]) == pytest.approx(losses(runs["ddp_cpu"]), abs=1e-4)
    assert len(losses(runs["fsdp_cpu"])) == 3
    assert moved(runs["fsdp_cpu"]) and summaries["fsdp_cpu"]["world_size"] == 2
    for key in ("exact/J", "exact/kl", "exact/reward"):  # the final policies agree as the losses do
        assert summaries["fsdp_cpu"][key] == pytest.approx(summaries["ddp_cpu"][key], abs=1e-4)


@pytest.mark.slow
def test_fsdp_cpu_iterative_dpo_collects_and_trains_as_ddp(tmp_path, subprocess_env):
    """Iterative DPO under FSDP: each round's dataset is sampled on every rank through the sharded
    models, inside the round's trainer, and the next round's trainer shards the policy again.
    Against DDP on the same seeds: every round's pairs on every rank are the same, and so are the
    losses and the final weights, which are also the same on both ranks (before the fix, FSDP's
    second round left the parameters it had flattened once unsharded and unreduced, and rank 0
    and rank 1 ended on different weights)."""
    iterative = [
        "algo=iterative",
        "algo.iterations=2",
        "algo.prompts_per_iteration=32",
        "algo.batch_size=16",
        "algo.sample_batch_size=16",
        "algo.eval_every=2",
        "sampler=pilaf",
        "model.generation.engine=transformers",
        "eval.exact_prompts=0",
        "logger=csv",
        "task.num_test_prompts=32",
        "oracle.calibration_prompts=256",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
    ]
    runs = {name: tmp_path / name for name in ("fsdp_cpu", "ddp_cpu")}
    summaries = {name: launch(d, subprocess_env, f"trainer={name}", *iterative) for name, d in runs.items()}
    for round_ in (1, 2):
        for rank in (0, 1):
            pairs = [
                datasets.load_from_disk(str(d / "preferences" / f"iteration_{round_}" / f"rank_{rank}"))[:]
                for d in runs.values()
            ]
            assert pairs[0] == pairs[1] and len(pairs[0]["response_a"]) == 32
    assert losses(runs["fsdp_cpu"]) == pytest.approx(losses(runs["ddp_cpu"]), abs=1e-6)
    assert len(losses(runs["fsdp_cpu"])) == 4 and summaries["fsdp_cpu"]["steps"] == 4
    shas = {name: {r["policy_sha256"] for r in rank_reports(d)} for name, d in runs.items()}
    assert len(shas["fsdp_cpu"]) == 1 and shas["fsdp_cpu"] == shas["ddp_cpu"]
    assert summaries["fsdp_cpu"]["annotations/total"] == 2 * 2 * 32 * 2  # ranks x rounds x pairs x responses


@pytest.mark.slow
def test_fsdp_cpu_runs_the_text_path_with_eos(tmp_path, subprocess_env):
    """model=small / oracle=skywork_8b / task=hh_rlhf on the local stand-ins (tests/hf_fixtures.py):
    different tokenizers, a tokenizer with EOS, 7 test prompts cut 4 / 3 between the ranks."""
    text = [
        "model=small",
        f"model.policy.path={save_policy(tmp_path / 'policy')}",
        "model.policy.dtype=float32",
        "model.precision=32-true",
        "model.max_prompt_length=64",
        "model.max_response_length=12",
        "model.sft.steps=0",
        "oracle=skywork_8b",
        f"oracle.model.path={save_reward_model(tmp_path / 'reward')}",
        "oracle.model.dtype=float32",
        "task=hh_rlhf",
        f"task.data_files.train={write_hh_jsonl(tmp_path / 'train.jsonl', rows=64, seed=0)}",
        f"task.data_files.test={write_hh_jsonl(tmp_path / 'test.jsonl', rows=16, seed=1)}",
        "task.num_test_prompts=7",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    online = ["algo.steps=2", "algo.batch_size=4", "algo.eval_every=1", "algo.lr=1e-3", "sampler=pilaf"]
    rest = ["trainer=fsdp_cpu", "logger=csv", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
    summary = launch(tmp_path / "run", subprocess_env, *text, *online, *rest)
    assert summary["world_size"] == 2 and summary["steps"] == 2
    eos = AutoTokenizer.from_pretrained(tmp_path / "policy").eos_token_id
    for rank in (0, 1):
        pairs = datasets.load_from_disk(str(tmp_path / "run" / "preferences" / f"rank_{rank}"))
        for response in list(pairs["response_a"]) + list(pairs["response_b"]):
            assert len(response) <= 12 and eos not in response[:-1]  # stopped at EOS or at the limit
    assert len(losses(tmp_path / "run")) == 2 and moved(tmp_path / "run")


@pytest.mark.slow
def test_fsdp_cpu_checkpoints_and_resumes_to_the_uninterrupted_weights(tmp_path, subprocess_env):
    """Checkpoints under FSDP hold the full weights and optimizer state (gathered on CPU without
    Lightning's offload, which crashed the first checkpoint), and a run resumed from one (its
    Adam state re-sharded) ends on the same weights, bit for bit, as a run never stopped."""
    short = [a for a in EMBEDDED if not a.startswith("algo.steps")] + ["checkpoint.every_n_steps=2", "trainer=fsdp_cpu"]
    whole = launch(tmp_path / "whole", subprocess_env, "algo.steps=6", *short)
    launch(tmp_path / "stopped", subprocess_env, "algo.steps=4", *short)
    assert sorted(p.name for p in (tmp_path / "stopped" / "checkpoints").glob("*.ckpt")) == [
        "step_00000002.ckpt",
        "step_00000004.ckpt",
    ]
    # As if the job had been stopped right after its step-4 checkpoint: no summary, a longer budget.
    (tmp_path / "stopped" / "summary.json").unlink()
    resumed = launch(tmp_path / "stopped", subprocess_env, "algo.steps=6", *short)
    timing = json.loads((tmp_path / "stopped" / "timing.json").read_text())
    assert timing["resumed_from"].endswith("step_00000004.ckpt (step 4)")
    assert resumed["steps"] == whole["steps"] == 6
    shas = [[r["policy_sha256"] for r in rank_reports(tmp_path / name)] for name in ("whole", "stopped")]
    assert shas[0][0] == shas[0][1] == shas[1][0] == shas[1][1]
