"""The tabular closed form against autograd, and the theorem's identity: with the exact share, the
linearised T-PILAF gradient is parallel to grad J at any policy; vanilla's only where r_theta is flat."""

from __future__ import annotations

import pytest
import torch

from pilaf_exp.analysis.tabular import (
    PairWorld,
    cosine,
    dpo_gradient,
    measure,
    objective_gradient,
    pair_probability,
    path_logp,
    prompt_rows,
)
from pilaf_exp.analysis.theory import interpolated_logprobs

N, BETA = 40, 0.5


def tables(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log pi_ref, r* (sd 2) and a policy off the path (all float64, [N])."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda: torch.randn(N, generator=generator, dtype=torch.float64)  # noqa: E731
    reference = draw().log_softmax(0)
    reward = 2.0 * draw()
    policy = (path_logp(reference, reward, BETA, 0.6) + 0.7 * draw()).log_softmax(0)
    return reference, reward, policy


def world_of(reference, reward, policy) -> PairWorld:
    return PairWorld(policy, reference, reward, BETA)


def test_objective_gradient_is_autograds():
    reference, reward, policy = tables()
    logits = policy.clone().requires_grad_(True)
    logp = logits.log_softmax(0)
    objective = (logp.exp() * (reward - BETA * (logp - reference))).sum()
    (expected,) = torch.autograd.grad(objective, logits)
    assert torch.allclose(objective_gradient(policy, reference, reward, BETA), expected, atol=1e-12)


@pytest.mark.parametrize("sampler", ["vanilla", "t_pilaf_half", "t_pilaf_exact"])
def test_dpo_gradient_is_autograds_of_the_expected_loss(sampler):
    """Pairs drawn from P (held fixed), labels Bradley-Terry on r*: the expected DPO loss's gradient."""
    reference, reward, policy = tables(1)
    probability = pair_probability(world_of(reference, reward, policy), sampler)
    logits = policy.clone().requires_grad_(True)
    implicit = BETA * (logits.log_softmax(0) - reference)
    margin = implicit[:, None] - implicit[None, :]
    a_wins = torch.sigmoid(reward[:, None] - reward[None, :])
    loss = probability * (
        a_wins * -torch.nn.functional.logsigmoid(margin) + (1 - a_wins) * -torch.nn.functional.logsigmoid(-margin)
    )
    (expected,) = torch.autograd.grad(loss.sum(), logits)
    measured = dpo_gradient(world_of(reference, reward, policy), probability, linearised=False)
    assert torch.allclose(measured, expected, atol=1e-12)


def test_the_interpolated_pairs_are_the_gradient_analysis_samplers():
    """pi+- of the pair distribution are theory.interpolated_logprobs at coefficient beta (T-PILAF)."""
    reference, reward, policy = tables(2)
    world = world_of(reference, reward, policy)
    half = pair_probability(world, "t_pilaf_half")
    plus, minus = interpolated_logprobs(policy, reference, BETA)
    expected = 0.5 * torch.outer(policy.exp(), policy.exp()) + 0.5 * torch.outer(plus.exp(), minus.exp())
    assert torch.allclose(half, expected, atol=1e-14) and float(half.sum()) == pytest.approx(1.0)


def test_exact_share_linearised_gradient_is_parallel_to_grad_j_and_vanillas_is_not():
    reference, reward, policy = tables(3)
    world = world_of(reference, reward, policy)
    grad_j = objective_gradient(policy, reference, reward, BETA)
    exact = -dpo_gradient(world, pair_probability(world, "t_pilaf_exact"), linearised=True)
    vanilla = -dpo_gradient(world, pair_probability(world, "vanilla"), linearised=True)
    assert cosine(exact, grad_j) == pytest.approx(1.0, abs=1e-12)
    assert cosine(vanilla, grad_j) < 0.999  # r_theta varies here, so vanilla's weights tilt the direction


def test_at_the_reference_every_sampler_is_the_same_and_the_prediction_is_exact_for_vanilla():
    """pi = pi_ref: r_theta = 0, so pi+- = pi (all samplers one pair law) and sigma'(0) is constant."""
    reference, reward, _ = tables(4)
    row = measure(reference, reference, reward, BETA)
    assert row["Z+ Z-"] == pytest.approx(1.0) and row["vanilla predicted"] == pytest.approx(1.0, abs=1e-12)
    assert row["t_pilaf_exact measured"] == pytest.approx(row["vanilla measured"], abs=1e-12)


def test_prompt_rows_cover_the_grid_and_restrict_the_world_to_the_support():
    """On a small support the world is restricted (pi_ref renormalised on it), so the theorem's identity
    still holds exactly there, and the mass the full-table policy puts on the support is reported."""
    reference, reward, _ = tables(5)
    rows = prompt_rows(reference, reward, [0.1, 1.0], [0.0, 0.5], [0.0, 1.0], top=N, seed=0)
    assert len(rows) == 8 and all(row["support mass"] == pytest.approx(1.0) for row in rows)
    (small,) = prompt_rows(reference, reward, [1.0], [0.5], [1.0], top=5, seed=0)
    assert small["support"] == 5 and small["support mass"] < 0.99
    assert small["t_pilaf_exact predicted"] == pytest.approx(1.0, abs=1e-12) and small["Z+ Z-"] >= 1.0
