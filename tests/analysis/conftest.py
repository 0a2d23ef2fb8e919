"""The brute-force world of tests/analysis (brute_force.py): a policy, a reference and their exact table."""

from __future__ import annotations

import pytest
import torch
from brute_force import LENGTH, PROMPTS, VOCAB, closed_form, full_logprobs, tiny

from pilaf_exp.evaluation.exact import ResponseTable, response_rewards
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.builders import seeded_reward_model


@pytest.fixture(scope="module")
def world():
    policy, reference = tiny(0).requires_grad_(True), tiny(1).requires_grad_(False)
    oracle = RewardOracle(seeded_reward_model(VOCAB, hidden_size=16, num_layers=1, num_heads=2, seed=2), VOCAB).eval()
    oracle.scale.fill_(0.3)
    with torch.no_grad():
        reference_logp = torch.stack([full_logprobs(reference, x) for x in PROMPTS])
    reward = torch.stack([response_rewards(oracle, x, VOCAB, LENGTH) for x in PROMPTS])
    return policy, reference, ResponseTable(PROMPTS, reference_logp, reward, VOCAB, LENGTH, 1.0)


@pytest.fixture(scope="module")
def closed(world) -> dict[str, torch.Tensor]:
    """The analysis's closed form for vanilla, hybrid and T-PILAF."""
    return {kind: closed_form(world[0], world[2], kind) for kind in ("vanilla", "hybrid", "t_pilaf")}
