"""The paper's setting through the same configs, on tiny local checkpoints and HH-style JSONL:
model=small / oracle=skywork_8b / task=hh_rlhf load everything by path, as hub ids would."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from hf_fixtures import save_policy, save_reward_model, write_hh_jsonl
from transformers import AutoTokenizer

from pilaf_exp.build import build_world
from pilaf_exp.infra.cli import compose_config
from pilaf_exp.labelling.encoding import TextReencoder
from pilaf_exp.models.logprobs import sequence_logprob
from pilaf_exp.run import run


@pytest.fixture(scope="module")
def real_parts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {
        "policy": save_policy(root / "policy"),
        "reward": save_reward_model(root / "reward"),
        "train": write_hh_jsonl(root / "train.jsonl", rows=96, seed=0),
        "test": write_hh_jsonl(root / "test.jsonl", rows=24, seed=1),
        "cache": root / "cache",
    }


def paper_setting(parts: dict[str, Path], *extra: str) -> list[str]:
    """model=small / oracle=skywork_8b / task=hh_rlhf, pointed at the local stand-ins, shrunk."""
    return [
        "model=small",
        f"model.policy.path={parts['policy']}",
        "model.policy.dtype=float32",
        "model.precision=32-true",
        "model.max_prompt_length=64",
        "model.max_response_length=12",
        "model.sft.steps=30",
        "model.sft.batch_size=16",
        "model.sft.lr=3e-3",
        "algo.lr=1e-3",
        "oracle=skywork_8b",
        f"oracle.model.path={parts['reward']}",
        "oracle.model.dtype=float32",
        "task=hh_rlhf",
        f"task.data_files.train={parts['train']}",
        f"task.data_files.test={parts['test']}",
        "task.num_test_prompts=16",
        f"cache_dir={parts['cache']}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


ONLINE = ["algo.steps=6", "algo.batch_size=8", "algo.micro_batch_size=4", "algo.eval_every=3"]


def test_online_dpo_runs_end_to_end_on_text(real_parts, tmp_path):
    cfg = compose_config(*paper_setting(real_parts, *ONLINE, "sampler=pilaf", f"output_dir={tmp_path}"))
    summary = run(cfg)
    assert summary["annotations/total"] == 2 * 6 * 8
    assert summary["steps"] == 6
    assert all(torch.isfinite(torch.tensor(summary[k])) for k in ("eval/reward", "eval/kl", "eval/J"))
    # PILAF interpolated some pairs: the reference ran on some rows (more than 2 passes per pair).
    assert summary["sampling/forward_passes_per_pair"] > 2.0
    pairs = datasets.load_from_disk(str(tmp_path / "preferences"))
    tokenizer = AutoTokenizer.from_pretrained(real_parts["policy"])
    prompt = tokenizer.decode(pairs[0]["prompt"], skip_special_tokens=True)
    assert prompt.startswith("\n\nHuman:") and prompt.endswith("\n\nAssistant:")  # split at the last turn
    # Responses stop at EOS (kept, nothing after it) or at the length limit.
    for response in [*pairs["response_a"], *pairs["response_b"]]:
        assert len(response) <= 12
        assert tokenizer.eos_token_id not in response[:-1]


def test_iterative_dpo_runs_end_to_end_on_text(real_parts, tmp_path):
    iterative = [
        "algo=iterative",
        "algo.iterations=2",
        "algo.prompts_per_iteration=16",
        "algo.batch_size=8",
        "algo.micro_batch_size=4",
        "algo.eval_every=2",
        "sampler=hybrid",
        f"output_dir={tmp_path}",
    ]
    summary = run(compose_config(*paper_setting(real_parts, *iterative)))
    assert summary["annotations/total"] == 2 * 2 * 16
    for iteration in (1, 2):
        assert len(datasets.load_from_disk(str(tmp_path / "preferences" / f"iteration_{iteration}"))) == 16


def test_sft_stage_learns_the_chosen_responses(real_parts, tmp_path):
    """The SFT reference gives held-out chosen responses far more probability than the raw checkpoint."""
    exp = build_world(compose_config(*paper_setting(real_parts, *ONLINE, f"output_dir={tmp_path}")))
    raw = type(exp.reference).from_pretrained(real_parts["policy"]).eval()
    prompts, prompt_mask, responses, response_mask = exp.task.sft_examples(32, torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = sequence_logprob(raw, prompts, prompt_mask, responses, response_mask).mean()
        after = sequence_logprob(exp.reference.eval(), prompts, prompt_mask, responses, response_mask).mean()
    assert after > before + 10, (before, after)


def test_mismatched_tokenizers_go_through_text(real_parts, tmp_path):
    """Policy and oracle tokenizers differ: the oracle sees the dialogue re-encoded in its own
    tokens and chat format, and scores it exactly as it scores that text directly."""
    exp = build_world(compose_config(*paper_setting(real_parts, *ONLINE, f"output_dir={tmp_path}")))
    encoder = exp.oracle.encoder
    assert isinstance(encoder, TextReencoder)
    policy_tok, oracle_tok = exp.task.tokenizer, AutoTokenizer.from_pretrained(real_parts["reward"])
    prompts = exp.task.test[:3]
    responses = [policy_tok(t, add_special_tokens=False)["input_ids"] for t in [" Rex is fine.", " Luna!", " No."]]
    width = max(map(len, responses))
    response_ids = torch.tensor([r + [policy_tok.pad_token_id] * (width - len(r)) for r in responses])
    response_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in responses])
    input_ids, attention_mask, _ = encoder(prompts.ids, prompts.mask, response_ids, response_mask)
    first = oracle_tok.decode(input_ids[0][attention_mask[0].bool()])
    assert first.startswith("<|begin|><|user|>What is a good name") or "<|user|>Tell me about" in first
    assert first.endswith("<|assistant|>Rex is fine.<|end|>")
    scores = exp.oracle.raw_score(prompts.ids, prompts.mask, response_ids, response_mask)
    direct = oracle_tok(first, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        expected = exp.oracle.model(**direct).logits[0, 0]
    assert abs(scores[0].item() - expected.item()) < 1e-5


def test_mismatched_policy_and_reference_vocabularies_are_refused(real_parts, tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from pilaf_exp.sampling.decoding import POLICY, DecodeSpec, decode

    policy = AutoModelForCausalLM.from_pretrained(real_parts["policy"])
    config = LlamaConfig(**{**policy.config.to_dict(), "vocab_size": policy.config.vocab_size + 7})
    reference = AutoModelForCausalLM.from_config(config)
    ids = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"policy vocabulary size 320 != reference vocabulary size 327"):
        decode(policy, reference, ids, ids, torch.full((2,), POLICY), DecodeSpec(2), torch.Generator())


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pilaf_exp", f"hydra.run.dir={tmp_path / 'run'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.policy.path=/no/such/checkpoint", "model.policy.path='/no/such/checkpoint' does not exist"),
        ("oracle.model.path=./missing_rm", "oracle.model.path='./missing_rm' does not exist"),
    ],
)
def test_missing_checkpoint_is_one_clear_line(real_parts, tmp_path, override, expected):
    result = cli(tmp_path, *paper_setting(real_parts, *ONLINE), override)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {expected}: expected a checkpoint directory or a hub id"


def test_malformed_jsonl_line_names_file_and_line(real_parts, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = real_parts["train"].read_text().splitlines()
    bad.write_text("\n".join([*good[:4], '{"chosen": "\\n\\nHuman: hi', *good[4:8]]) + "\n")
    result = cli(tmp_path, *paper_setting(real_parts, *ONLINE), f"task.data_files.train={bad}")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {bad} line 5: not valid JSON")
    assert not (tmp_path / "run" / "summary.json").exists()


def test_prompts_over_the_limit_are_skipped_and_counted(real_parts, tmp_path):
    """No truncation: with a 40-token limit the two-turn prompts (~60 tokens) are dropped, and the
    summary says how many."""
    tokenizer = AutoTokenizer.from_pretrained(real_parts["policy"])
    rows = [json.loads(line)["chosen"] for line in real_parts["train"].read_text().splitlines()]
    too_long = sum(len(tokenizer(r[: r.rfind("\n\nAssistant:") + 12])["input_ids"]) > 40 for r in rows)
    assert 0 < too_long < len(rows)
    cfg = compose_config(*paper_setting(real_parts, *ONLINE, "model.max_prompt_length=40", f"output_dir={tmp_path}"))
    summary = run(cfg)
    assert summary["task/skipped_train_prompt_too_long"] == too_long
    prompts = datasets.load_from_disk(str(tmp_path / "preferences"))["prompt"]
    assert max(map(len, prompts)) <= 40


def test_a_decode_batch_over_the_kv_budget_fails_before_training(real_parts, tmp_path):
    result = cli(tmp_path, *paper_setting(real_parts, *ONLINE), "model.generation.max_kv_cache_gb=0.0001")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"error: decoding 256 rows x \d+ positions needs an estimated [\d.]+ GB of KV cache", last)
    assert "model.generation.max_kv_cache_gb=0.0001" in last
