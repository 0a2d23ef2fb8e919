"""The exact optimum J* against an independent brute-force computation, and as an upper bound."""

from __future__ import annotations

import math

import pytest
import torch

from pilaf_exp.evaluation.exact import (
    ExactEvaluation,
    ResponseTable,
    all_sequences,
    response_logprobs,
    response_rewards,
)
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.builders import seeded_reward_model, tiny_llama
from pilaf_exp.models.logprobs import sequence_logprob

VOCAB, PROMPT, LENGTH, BETA = 3, 2, 4, 0.5


@pytest.fixture(scope="module")
def models():
    reference = tiny_llama(VOCAB, hidden_size=32, num_layers=1, num_heads=2, seed=4).eval()
    oracle = RewardOracle(seeded_reward_model(VOCAB, hidden_size=32, num_layers=1, num_heads=2, seed=5), VOCAB).eval()
    oracle.shift.fill_(0.3)
    oracle.scale.fill_(1.7)
    return reference, oracle


def brute_force(reference, oracle, prompt):
    """Full forwards of every (prompt, response) sequence, one at a time in a Python loop."""
    logps, rewards = [], []
    for response in all_sequences(VOCAB, LENGTH):
        x, y = prompt[None], response[None]
        logps.append(sequence_logprob(reference, x, torch.ones_like(x), y, torch.ones_like(y)).item())
        rewards.append(oracle.score(x, torch.ones_like(x), y, torch.ones_like(y)).item())
    return torch.tensor(logps), torch.tensor(rewards)


def test_enumeration_matches_brute_force(models):
    reference, oracle = models
    prompt = torch.tensor([2, 0])
    logp = response_logprobs(reference, prompt, VOCAB, LENGTH)
    reward = response_rewards(oracle, prompt, VOCAB, LENGTH)
    expected_logp, expected_reward = brute_force(reference, oracle, prompt)
    torch.testing.assert_close(logp, expected_logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reward, expected_reward, atol=1e-5, rtol=1e-5)
    assert abs(logp.exp().sum().item() - 1) < 1e-5


def test_optimum_value_and_that_no_policy_beats_it(models):
    reference, oracle = models
    prompts = torch.tensor([[2, 0], [1, 1]])
    result = ExactEvaluation(ResponseTable.build(reference, oracle, prompts, VOCAB, LENGTH), BETA).optimum()
    # Independent J*: maximise over the closed form pi* ∝ pi_ref exp(r / beta), computed in float64.
    j_star, j_ref = [], []
    for prompt in prompts:
        logp, reward = (t.double() for t in brute_force(reference, oracle, prompt))
        weights = logp.exp() * (reward / BETA).exp()
        pi_star = weights / weights.sum()
        j_star.append((pi_star * reward).sum() - BETA * (pi_star * (pi_star.log() - logp)).sum())
        j_ref.append((logp.exp() * reward).sum())
        # Any other policy (here: random ones and pi_ref itself) has a lower J.
        generator = torch.Generator().manual_seed(0)
        for _ in range(20):
            other = torch.softmax(3 * torch.randn(len(logp), generator=generator, dtype=torch.float64), 0)
            j_other = (other * reward).sum() - BETA * (other * (other.log() - logp)).sum()
            assert j_other < j_star[-1]
    assert math.isclose(result["optimum/J_star"], torch.stack(j_star).mean().item(), abs_tol=1e-4)
    assert math.isclose(result["optimum/J_ref"], torch.stack(j_ref).mean().item(), abs_tol=1e-4)
    assert result["optimum/J_star"] > result["optimum/J_ref"] + 0.05


def test_trained_policies_never_beat_the_enumerated_optimum(small_cfg, tmp_path):
    """On a task small enough to enumerate every test prompt (4 tokens, responses of 4), the
    evaluated J of a policy trained with a large step size stays below J* within its sampling error."""
    from pilaf_exp.run import run

    small_task = ["task.vocab_size=4", "task.response_length=4", "task.num_test_prompts=16", "eval.exact_prompts=16"]
    summary = run(small_cfg(*small_task, "sampler=pilaf", "algo.steps=40", "algo.lr=3e-3", "algo.eval_every=5"))
    history = (tmp_path / "run" / "eval_history.csv").read_text().splitlines()
    header = history[0].split(",")
    rows = [dict(zip(header, map(float, line.split(",")))) for line in history[1:]]
    assert summary["optimum/prompts"] == 16
    assert summary["optimum/J_star"] > summary["sft/J"]  # there is something to gain
    assert summary["eval/J"] > summary["sft/J"]  # and training gained some of it
    for row in rows:
        assert row["eval/J"] <= summary["optimum/J_star"] + 3 * row["eval/J_stderr"]
