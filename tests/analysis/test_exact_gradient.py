"""Exact grad J on the brute-force task: the tree walk against full-sequence forwards, grad J against
finite differences of exact J, forward-mode directional derivatives against autograd."""

from __future__ import annotations

import pytest
import torch
from brute_force import BETA, LENGTH, PROMPTS, SIZE, VOCAB, exact_j, flat_grad, full_logprobs, tiny, with_offset

from pilaf_exp.analysis.measure import gradients
from pilaf_exp.analysis.tree import directional_derivatives, level_logprobs, sum_levels, weighted_gradients
from pilaf_exp.evaluation.exact import all_sequences
from pilaf_exp.models.logprobs import sequence_logprob


def test_full_logprobs_are_the_training_codes():
    model, prompt, responses = tiny(3).float(), PROMPTS[0], all_sequences(VOCAB, LENGTH)
    x = prompt[None].expand(SIZE, -1)
    expected = sequence_logprob(model, x, torch.ones_like(x), responses, torch.ones_like(responses))
    torch.testing.assert_close(full_logprobs(model, prompt), expected)


def test_tree_walk_matches_full_sequences(world):
    policy, _, _ = world
    weights = torch.randn(SIZE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for prompt in PROMPTS:
        full = full_logprobs(policy, prompt)
        torch.testing.assert_close(sum_levels(level_logprobs(policy, prompt, VOCAB, LENGTH)), full)
        [tree] = weighted_gradients(policy, prompt, [weights], VOCAB, LENGTH)
        torch.testing.assert_close(tree, flat_grad((weights * full).sum(), policy), rtol=1e-10, atol=1e-12)


def test_exact_grad_j_matches_finite_differences_of_exact_j(world):
    policy, reference, table = world
    logp = torch.stack([full_logprobs(policy, x).detach() for x in PROMPTS])
    grad_j, _ = gradients(policy, table, logp, {}, BETA)
    torch.testing.assert_close(grad_j, flat_grad(exact_j(policy, reference, table), policy))  # autograd of J
    generator = torch.Generator().manual_seed(1)
    directions = [torch.randn(len(grad_j), generator=generator, dtype=torch.float64) for _ in range(2)]
    directions = [v / v.norm() for v in directions]
    directions += [torch.eye(len(grad_j), dtype=torch.float64)[k] for k in (0, len(grad_j) // 2, len(grad_j) - 1)]
    step = 1e-6
    for v in directions:
        with torch.no_grad():
            plus, minus = (exact_j(with_offset(policy, s * step * v), reference, table) for s in (1, -1))
        difference = float(plus - minus) / (2 * step)
        assert difference == pytest.approx(float(grad_j @ v), rel=1e-7, abs=1e-9)
    assert grad_j.norm() > 1e-3  # the test has something to check


def test_directional_derivatives_match_autograd(world):
    policy, _, _ = world
    direction = torch.randn(sum(p.numel() for p in policy.parameters()), generator=torch.Generator().manual_seed(2))
    along = directional_derivatives(policy, PROMPTS, direction.double(), VOCAB, LENGTH)
    unit = direction.double() / direction.norm()
    for i, prompt in enumerate(PROMPTS):
        full = full_logprobs(policy, prompt)
        for y in (0, 17, SIZE - 1):
            assert float(along[i, y]) == pytest.approx(float(flat_grad(full[y], policy) @ unit), rel=1e-6, abs=1e-8)
