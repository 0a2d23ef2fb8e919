"""The expected DPO gradient of each sampler on the brute-force task: the closed form against autograd
through `dpo_loss` over every pair, the samplers' Monte Carlo estimates against the closed form within
their reported error, the batch signal-to-noise against simulated batches, `analyse` on a known pair."""

from __future__ import annotations

import pytest
import torch
from brute_force import BETA, LENGTH, PROMPTS, VOCAB, closed_form_independent, exact_j, flat_grad, full_logprobs

from pilaf_exp.analysis.measure import Setting, analyse, compare, cosine, draw, gradients, sampler_generator
from pilaf_exp.analysis.theory import SequencePilafSampler
from pilaf_exp.analysis.tree import directional_derivatives
from pilaf_exp.evaluation.exact import all_sequences
from pilaf_exp.sampling.decoding import DecodeSpec
from pilaf_exp.sampling.pairs import PairBatch
from pilaf_exp.sampling.samplers import HybridSampler, VanillaSampler
from pilaf_exp.training.dpo import dpo_loss


@pytest.mark.parametrize("kind", ["vanilla", "hybrid"])
def test_closed_form_expected_dpo_gradient_matches_autograd_through_dpo_loss(world, closed, kind):
    policy, reference, table = world
    expected = closed_form_independent(policy, reference, table, kind)
    torch.testing.assert_close(closed[kind], expected, rtol=1e-8, atol=1e-11)
    assert expected.norm() > 1e-3


SPEC = DecodeSpec(max_new_tokens=LENGTH)


def monte_carlo(world, sampler, pairs: int):
    """The analysis's two-halves estimate from the sampler's own pairs: (grad J, [g1, g2], terms)."""
    policy, reference, table = world
    logp = torch.stack([full_logprobs(policy, x).detach() for x in PROMPTS])
    setting = Setting(beta=BETA, lr=1.0, batch_size=8, pairs=pairs)
    generator = sampler_generator(0, type(sampler).__name__)
    halves = [draw(sampler, policy, reference, table, logp, SPEC, setting, generator, pairs) for _ in range(2)]
    grad_j, dpo = gradients(policy, table, logp, {"s": halves}, BETA)
    return grad_j, dpo["s"], halves


SAMPLERS = [
    (VanillaSampler(), "vanilla", "hybrid"),
    (HybridSampler(), "hybrid", "vanilla"),
    (SequencePilafSampler(coef=BETA), "t_pilaf", "vanilla"),
]


@pytest.mark.parametrize("sampler, kind, other", SAMPLERS, ids=[k for _, k, _ in SAMPLERS])
def test_monte_carlo_estimate_agrees_with_the_closed_form_within_its_error(world, closed, sampler, kind, other):
    """The sampler's own pairs estimate the closed form: along grad J and along random directions the
    Monte Carlo projection is within 4 of its per-pair standard errors of the closed form, and far
    from the other sampler's closed form (the check has power)."""
    policy, _, table = world
    exact, wrong = closed[kind], closed[other]
    setting = Setting(beta=BETA, lr=1.0, batch_size=8, pairs=2000)
    grad_j, halves, terms = monte_carlo(world, sampler, setting.pairs)
    generator = torch.Generator().manual_seed(3)
    directions = [grad_j] + [torch.randn(len(grad_j), generator=generator, dtype=torch.float64) for _ in range(2)]
    z_right, z_wrong = [], []
    for direction in directions:
        along = directional_derivatives(policy, PROMPTS, direction, VOCAB, LENGTH)
        result = compare(direction, halves, terms, along, setting)
        unit = direction / direction.norm()
        z_right.append((result["projection"] - float(-exact @ unit)) / result["projection_se"])
        z_wrong.append((result["projection"] - float(-wrong @ unit)) / result["projection_se"])
        # The per-pair projections (forward-mode derivatives) and the gradient vectors agree.
        assert abs(result["projection_check"]) < 1e-5 * abs(result["projection"]) + 1e-9
    assert max(map(abs, z_right)) < 4, z_right
    assert max(map(abs, z_wrong)) > 10, z_wrong
    # The cosine: its Monte Carlo error is small against the difference between the two samplers.
    pooled = -(halves[0] + halves[1]) / 2
    gap = abs(cosine(-exact, grad_j) - cosine(-wrong, grad_j))
    assert abs(cosine(pooled, grad_j) - cosine(-exact, grad_j)) < gap / 5


def label_projections(terms, along) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair, the negative loss gradient along the unit direction when a wins and when b wins."""
    d = along[terms.index_a] - along[terms.index_b]
    return BETA * torch.sigmoid(-terms.margin) * d, -BETA * torch.sigmoid(terms.margin) * d


def test_signal_to_noise_matches_simulated_batches_with_sampled_labels(world):
    policy, _, table = world
    setting = Setting(beta=BETA, lr=1.0, batch_size=8, pairs=500)
    grad_j, halves, terms = monte_carlo(world, VanillaSampler(), setting.pairs)
    along = directional_derivatives(policy, PROMPTS, grad_j, VOCAB, LENGTH)
    unit = grad_j / grad_j.norm()
    # Each label's projection against autograd through dpo_loss on full-sequence log-probs.
    prompt, t = PROMPTS[0], terms[0][0]
    logp, ref = full_logprobs(policy, prompt), table.reference_logp[0]
    a_wins, b_wins = label_projections(t, along[0])
    for k in (0, 1, 2):
        a, b = t.index_a[k], t.index_b[k]
        for (chosen, rejected), expected in (((a, b), a_wins[k]), ((b, a), b_wins[k])):
            loss = dpo_loss(logp[chosen][None], logp[rejected][None], ref[chosen][None], ref[rejected][None], BETA)[0]
            assert float(-flat_grad(loss, policy) @ unit) == pytest.approx(float(expected), rel=1e-5, abs=1e-9)
    # Batches of `batch_size` pairs from the pool (every prompt equally often), labels drawn from Bradley-Terry.
    pool = [label_projections(t, along[i]) + (t.a_wins,) for half in terms for i, t in enumerate(half)]
    a_value, b_value, s = (torch.cat([p[j] for p in pool]) for j in range(3))
    generator = torch.Generator().manual_seed(4)
    picks = torch.randint(len(s), (40_000, setting.batch_size), generator=generator)
    a_won = torch.rand(picks.shape, generator=generator, dtype=torch.float64) < s[picks]
    batches = torch.where(a_won, a_value[picks], b_value[picks]).mean(-1)
    result = compare(grad_j, halves, terms, along, setting)
    assert result["snr"] == pytest.approx(float(batches.mean() / batches.std()), rel=0.03)
    assert result["projection"] == pytest.approx(float(batches.mean()), rel=0.05)
    assert result["snr"] < result["snr_expected_label"]  # label noise only adds variance


class FixedPairSampler:
    """Always the same pair (responses 5 and 40): its expected gradient is known without sampling."""

    def sample(self, policy, reference, prompt_ids, prompt_mask, spec, generator) -> PairBatch:
        rows, responses = len(prompt_ids), all_sequences(VOCAB, LENGTH)
        a, b = responses[5].expand(rows, -1), responses[40].expand(rows, -1)
        zeros = torch.zeros(rows, dtype=torch.long)
        return PairBatch(prompt_ids, prompt_mask, a, torch.ones_like(a), b, torch.ones_like(b), zeros, zeros)


def test_analyse_reports_exact_values_for_a_known_pair_distribution(world, closed):
    policy, reference, table = world
    setting = Setting(beta=BETA, lr=0.01, batch_size=8, pairs=64)
    out = analyse(
        policy, reference, table, {"fixed": FixedPairSampler(), "vanilla": VanillaSampler()}, SPEC, setting, seed=0
    )
    j = exact_j(policy, reference, table)
    grad_j = flat_grad(j, policy)
    assert out["objective"]["J"] == pytest.approx(float(j.detach()), rel=1e-9)
    assert out["grad_J_norm"] == pytest.approx(float(grad_j.norm()), rel=1e-8)
    loss = 0.0
    for i, prompt in enumerate(PROMPTS):  # expected DPO loss of the pair (5, 40), Bradley-Terry label
        logp, ref, r = full_logprobs(policy, prompt), table.reference_logp[i], table.reward[i].double()
        s = torch.sigmoid(r[5] - r[40])
        a_first = dpo_loss(logp[5][None], logp[40][None], ref[5][None], ref[40][None], BETA)[0]
        b_first = dpo_loss(logp[40][None], logp[5][None], ref[40][None], ref[5][None], BETA)[0]
        loss = loss + (s * a_first + (1 - s) * b_first) / len(PROMPTS)
    descent = -flat_grad(loss, policy)
    fixed = out["samplers"]["fixed"]
    assert fixed["cosine"] == pytest.approx(cosine(descent, grad_j), rel=1e-7)
    assert fixed["cosine_mc_error"] < 1e-9 and abs(fixed["noise_share"]) < 1e-9  # no sampling noise
    assert fixed["gain_per_annotation"] == pytest.approx(0.01 * float(descent @ grad_j) / 2, rel=1e-6)
    assert fixed["pairs"] == 2 * 64 * len(PROMPTS)
    vanilla = out["samplers"]["vanilla"]
    assert abs(vanilla["cosine"] - cosine(-closed["vanilla"], grad_j)) < 0.05
    assert 0 < vanilla["noise_share"] < 0.5 and vanilla["cosine_mc_error"] > 0
