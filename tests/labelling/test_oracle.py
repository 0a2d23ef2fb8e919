"""The proxy oracle: Bradley-Terry / argmax labels, calibration, padding-invariant scores."""

from __future__ import annotations

import torch

from pilaf_exp.labelling.labelers import ArgmaxLabeler, BradleyTerryLabeler
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.builders import seeded_reward_model


def test_bradley_terry_label_frequency_matches_sigmoid_of_score_gap():
    n = 40_000
    score_a = torch.tensor([0.0, 1.0, -2.0, 3.0]).repeat(n)
    score_b = torch.tensor([0.0, 0.0, 0.0, 1.0]).repeat(n)
    labels = BradleyTerryLabeler()(score_a, score_b, torch.Generator().manual_seed(0)).view(n, 4).float()
    expected = torch.sigmoid(torch.tensor([0.0, 1.0, -2.0, 2.0]))
    stderr = (expected * (1 - expected) / n).sqrt()
    assert ((labels.mean(0) - expected).abs() < 4 * stderr).all()


def test_argmax_label_is_deterministic():
    a, b = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.0, 2.0, 0.5])
    assert ArgmaxLabeler()(a, b, torch.Generator()).tolist() == [True, False, True]


def oracle() -> RewardOracle:
    return RewardOracle(seeded_reward_model(vocab_size=8, hidden_size=32, num_layers=1, num_heads=2, seed=3), 8).eval()


def test_calibration_centres_and_scales_scores():
    rm = oracle()
    prompts, responses = torch.randint(0, 8, (500, 4)), torch.randint(0, 8, (500, 6))
    masks = torch.ones_like(prompts), torch.ones_like(responses)
    raw = rm.raw_score(prompts, masks[0], responses, masks[1])
    assert raw.std() > 0
    rm.calibrate(raw, target_std=2.0)
    scores = rm.score(prompts, masks[0], responses, masks[1])
    assert abs(scores.mean().item()) < 1e-4 and abs(scores.std().item() - 2.0) < 1e-4


def test_score_ignores_padding_around_a_sequence():
    rm = oracle()
    prompt, response = torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5]])
    plain = rm.score(prompt, torch.ones_like(prompt), response, torch.ones_like(response))
    # Same sequence with the prompt left-padded and the response right-padded (junk token ids).
    padded = rm.score(
        torch.tensor([[7, 7, 1, 2, 3]]),
        torch.tensor([[0, 0, 1, 1, 1]]),
        torch.tensor([[4, 5, 6]]),
        torch.tensor([[1, 1, 0]]),
    )
    torch.testing.assert_close(plain, padded, atol=1e-5, rtol=1e-5)
    # ... and a different response does get a different score (the check above can fail).
    other = rm.score(prompt, torch.ones_like(prompt), torch.tensor([[5, 4]]), torch.ones_like(response))
    assert (other - plain).abs().item() > 1e-3
