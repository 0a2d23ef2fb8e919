"""Exact evaluation: the tree walk against full forwards, the SFT policy's exact J against J(pi_ref),
and the sampled estimate against the exact value within its standard error."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from pilaf_exp.build import build_parts
from pilaf_exp.evaluation import exact, leaves
from pilaf_exp.evaluation.exact import ResponseTable, all_sequences, response_logprobs
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.builders import tiny_llama
from pilaf_exp.models.logprobs import sequence_logprob

SMALL_TASK = ["task.vocab_size=4", "task.response_length=4", "task.num_test_prompts=16", "eval.exact_prompts=4"]


@pytest.mark.parametrize(
    "temperature, length, lean", [(1.0, 3, True), (0.7, 3, True), (1.0, 2, True), (1.0, 1, True), (1.0, 3, False)]
)
def test_tree_walk_matches_full_forwards(temperature, length, lean, monkeypatch):
    """The walk (its last level read from the parents' cache in place: lean, or through the model's
    own forward with a 4D mask) against full-sequence forwards."""
    if not lean:
        monkeypatch.setattr(exact, "lean_reason", lambda backbone: "forced fallback")
    model = tiny_llama(5, hidden_size=32, num_layers=2, num_heads=2, seed=3).eval()
    prompt = torch.tensor([1, 4, 0])
    logp = response_logprobs(model, prompt, vocab=5, length=length, temperature=temperature)
    responses = all_sequences(5, length)
    prompts = prompt.expand(len(responses), -1)
    ones = torch.ones_like
    direct = sequence_logprob(model, prompts, ones(prompts), responses, ones(responses), temperature)
    torch.testing.assert_close(logp, direct, atol=2e-5, rtol=1e-5)
    assert math.isclose(logp.exp().sum().item(), 1.0, abs_tol=1e-5)


@pytest.mark.parametrize("lean, length", [(True, 4), (True, 2), (True, 1), (False, 4)])
def test_walked_rewards_are_the_oracles_full_sequence_scores(lean, length, monkeypatch):
    """Every response of every prompt of a small table: the walk's rewards (two levels read below
    the cached rows on the lean path, one at length 1; or through the model's own forward) against
    `score` of the whole sequence, calibrated."""
    monkeypatch.setattr(leaves, "BLOCK_ROWS", 5)  # 16 cached rows at length 4: several blocks, the last one short
    if not lean:
        monkeypatch.setattr(exact, "lean_reason", lambda backbone: "forced fallback")
    vocab = 4
    # Grouped-query attention (2 kv heads for 4 query heads), as in the paper's 8B oracle.
    config = LlamaConfig(
        vocab_size=vocab + 1,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=vocab,
    )
    with torch.random.fork_rng():
        torch.manual_seed(7)
        model = LlamaForSequenceClassification(config).eval()
        torch.nn.init.normal_(model.score.weight, std=1.0)
    oracle = RewardOracle(model, pad_token_id=vocab).eval()
    prompts = torch.tensor([[1, 3, 0], [2, 2, 2], [0, 1, 3]])
    responses = all_sequences(vocab, length)
    ones = torch.ones_like

    def full(prompt):
        x = prompt.expand(len(responses), -1)
        return oracle.score(x, ones(x), responses, ones(responses))

    oracle.calibrate(torch.cat([full(p) for p in prompts]), target_std=2.0)  # shift and scale now matter
    table = ResponseTable.build(tiny_llama(vocab, hidden_size=32, seed=1), oracle, prompts, vocab, length)
    expected = torch.stack([full(p) for p in prompts])
    assert expected.std() == pytest.approx(2.0, rel=1e-3)
    torch.testing.assert_close(table.reward, expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from pilaf_exp.infra.cli import compose_config

    out = tmp_path_factory.mktemp("exact")
    cfg = compose_config(
        f"output_dir={out / 'run'}",
        f"cache_dir={out / 'cache'}",
        "logger=csv",
        "oracle.calibration_prompts=256",
        *SMALL_TASK,
    )
    return build_parts(cfg)


def test_exact_evaluation_of_the_sft_policy_is_the_reference_value(parts):
    exact = parts.evaluator.exact
    schedule = parts.evaluator.schedule  # exact values at the first and the last step (eval.exact_every: null)
    assert exact is not None and schedule.exact_due(0) and schedule.exact_due(schedule.last)
    assert not schedule.exact_due(schedule.every)
    values = exact(parts.world.reference)
    optimum = exact.table.optimum(exact.beta)
    assert values["exact/kl"] == pytest.approx(0.0, abs=1e-6)
    assert values["exact/J"] == pytest.approx(optimum["J_ref"], abs=1e-6)
    assert values["exact/gain"] == pytest.approx(0.0, abs=1e-5)
    assert optimum["J_star"] > optimum["J_ref"]


def test_sampled_evaluation_lands_within_three_standard_errors_of_the_exact_one(parts):
    exact = parts.evaluator.exact
    policy = tiny_llama(4, hidden_size=32, num_layers=2, num_heads=2, seed=11).eval()  # far from pi_ref: KL > 0
    truth = exact(policy)
    prompts = parts.world.task.test[: len(exact.table.prompts)]
    sampled = replace(parts.evaluator, prompts=prompts, samples_per_prompt=2048, exact=None)
    estimate = sampled(policy, parts.world.reference, parts.world.oracle, step=3)
    assert truth["exact/kl"] > 0.5
    assert abs(estimate["eval/J"] - truth["exact/J"]) < 3 * estimate["eval/J_stderr"]
    assert estimate["eval/J_stderr"] < 0.1  # the check has teeth: the error bar is small
    # Another evaluation step draws other responses: its estimate differs, within the same error.
    again = sampled(policy, parts.world.reference, parts.world.oracle, step=4)
    assert again["eval/J"] != estimate["eval/J"]
