"""The policy-ratio oracle (conf/oracle/policy_ratio.yaml): r* = log pi_target - log pi_ref, so at beta 1 the
optimum pi* ∝ pi_ref exp(r*) is pi_target itself, a policy of the model's class (J(pi_target) = J*)."""

from __future__ import annotations

import torch

from pilaf_exp.evaluation.exact import (
    ResponseTable,
    all_sequences,
    per_prompt_objective,
    response_logprobs,
    response_rewards,
)
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.labelling.policy_ratio import perturbed_policy_reward
from pilaf_exp.models.builders import tiny_llama

VOCAB, PROMPT, LENGTH = 4, 2, 3


def world(noise: float = 3.0):
    reference = tiny_llama(VOCAB, hidden_size=16, num_layers=1, num_heads=2, max_positions=8, seed=0).eval()
    model = perturbed_policy_reward(reference, prompt_length=PROMPT, noise=noise, seed=1)
    oracle = RewardOracle(model, pad_token_id=model.config.pad_token_id).eval()
    prompts = torch.tensor([[1, 2], [3, 0]])
    return reference, model, oracle, prompts


def test_score_is_the_log_ratio_of_the_two_models():
    reference, model, oracle, prompts = world()
    responses = all_sequences(VOCAB, LENGTH)  # [64, 3]
    for prompt in prompts:
        expected = response_logprobs(model.target, prompt, VOCAB, LENGTH) - response_logprobs(
            reference, prompt, VOCAB, LENGTH
        )
        batch = prompt.expand(len(responses), -1)
        scored = oracle.score(batch, torch.ones_like(batch), responses, torch.ones_like(responses))
        torch.testing.assert_close(scored, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(response_rewards(oracle, prompt, VOCAB, LENGTH), expected)  # the exact table's
    assert float(expected.std()) > 0.3  # the target is not the reference: r* varies


def test_padding_is_left_out_of_the_score():
    """A left-padded prompt and a right-padded response score as their unpadded selves."""
    reference, model, oracle, _ = world()
    prompt, response = torch.tensor([[0, 2]]), torch.tensor([[3, 1, 0]])
    prompt_mask, response_mask = torch.tensor([[0, 1]]), torch.tensor([[1, 1, 0]])
    padded = oracle.score(prompt, prompt_mask, response, response_mask)
    # the same response's log-ratio with the padding never seen: a one-token prompt, a two-token response
    logp = [response_logprobs(m, torch.tensor([2]), VOCAB, 2)[3 * VOCAB + 1] for m in (model.target, model.reference)]
    torch.testing.assert_close(padded, (logp[0] - logp[1]).reshape(1), atol=1e-4, rtol=1e-4)


def test_at_beta_one_the_target_is_the_optimum():
    reference, model, oracle, prompts = world()
    table = ResponseTable.build(reference, oracle, prompts, VOCAB, LENGTH)
    optimum = table.optimum(beta=1.0)
    target_j = torch.stack(
        [
            per_prompt_objective(
                response_logprobs(model.target, p, VOCAB, LENGTH), table.reference_logp[i], table.reward[i], 1.0
            )[2]
            for i, p in enumerate(prompts)
        ]
    ).mean()
    # J(pi) = -KL(pi || pi_target): J* = 0, reached by pi_target; pi_ref is below it by KL(pi_ref || pi_target)
    assert abs(optimum["J_star"]) < 1e-5
    assert abs(float(target_j) - optimum["J_star"]) < 1e-5
    assert optimum["J_star"] - optimum["J_ref"] > 0.1
