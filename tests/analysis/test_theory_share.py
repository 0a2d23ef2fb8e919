"""T-PILAF at the theorem's share: the sampler interpolates a share Z+ Z- / (1 + Z+ Z-) of each prompt's
pairs (not the paper's 1/2), and those pairs come from (pi+, pi-)."""

from __future__ import annotations

import math

import torch
from brute_force import BETA, LENGTH, PROMPTS, SIZE, VOCAB, full_logprobs

from pilaf_exp.analysis.expected import response_index
from pilaf_exp.analysis.theory import SequencePilafSampler, interpolated_logprobs, theorem_share
from pilaf_exp.sampling.decoding import PLUS, DecodeSpec

ROWS = 6000


def test_the_theorem_share_is_the_interpolated_fraction_and_the_pairs_come_from_plus_and_minus(world):
    policy, reference, _ = world
    prompt = PROMPTS[0]
    with torch.no_grad():
        logp, reference_logp = full_logprobs(policy, prompt), full_logprobs(reference, prompt)
    share = theorem_share(logp, reference_logp, BETA)
    assert share > 0.55  # far enough from the paper's 1/2 for the test below to tell them apart
    prompts = prompt.repeat(ROWS, 1)
    sampler = SequencePilafSampler(coef=BETA, interpolated_fraction=None)
    with torch.no_grad():
        batch = sampler.sample(
            policy,
            reference,
            prompts,
            torch.ones_like(prompts),
            DecodeSpec(max_new_tokens=LENGTH),
            torch.Generator().manual_seed(0),
        )
    interpolated = batch.source_a == PLUS
    error = math.sqrt(share * (1 - share) / ROWS)
    assert abs(float(interpolated.double().mean()) - share) < 4 * error
    assert abs(float(interpolated.double().mean()) - 0.5) > 4 * error
    # The interpolated rows' first responses follow pi+: total variation within sampling error.
    plus, _ = interpolated_logprobs(logp, reference_logp, BETA)
    counts = torch.bincount(response_index(batch.response_a[interpolated], VOCAB), minlength=SIZE).double()
    distance = 0.5 * float((counts / counts.sum() - plus.exp()).abs().sum())
    other = 0.5 * float((counts / counts.sum() - logp.double().exp()).abs().sum())
    assert distance < 0.08 < other, (share, distance, other)
