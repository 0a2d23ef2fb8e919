"""The theorem's quantities at a policy (`analysis.checkpoint_theory`), in a world where they are known:
the policy-ratio oracle's, where r* = log pi_target - log pi_ref, so at beta 1 the policy pi_target has
r_theta = r* exactly (the theorem's regime, at its end point) and pi_ref has r_theta = 0."""

from __future__ import annotations

import math

import pandas as pd
import torch

from pilaf_exp.analysis.checkpoint_theory import gaps, policy_rows
from pilaf_exp.evaluation.exact import ResponseTable
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.labelling.policy_ratio import perturbed_policy_reward
from pilaf_exp.models.builders import tiny_llama

VOCAB, LENGTH = 4, 3


def world():
    reference = tiny_llama(VOCAB, hidden_size=16, num_layers=1, num_heads=2, max_positions=8, seed=0).eval()
    model = perturbed_policy_reward(reference, prompt_length=2, noise=3.0, seed=1)
    oracle = RewardOracle(model, pad_token_id=0).eval()
    table = ResponseTable.build(reference, oracle, torch.tensor([[1, 2], [3, 0]]), VOCAB, LENGTH)
    return reference, model.target, table


def test_at_the_reference_the_implicit_reward_is_zero_and_the_samplers_coincide():
    reference, _, table = world()
    rows = pd.DataFrame(policy_rows(reference, table, beta=1.0, top=VOCAB**LENGTH))
    assert rows["support mass"].min() > 1 - 1e-9  # every response kept
    assert rows["sd r_theta"].abs().max() < 1e-6
    assert (rows["Z+ Z-"] - 1).abs().max() < 1e-6
    mean = gaps(rows)
    assert abs(mean["t_pilaf_half - vanilla measured"]) < 1e-9
    assert abs(mean["t_pilaf_exact - vanilla predicted"]) < 1e-9
    assert abs(mean["t_pilaf_half - vanilla measured (params)"]) < 1e-9


def test_at_the_target_the_implicit_reward_is_the_oracles():
    _, target, table = world()
    rows = pd.DataFrame(policy_rows(target.requires_grad_(True), table, beta=1.0, top=VOCAB**LENGTH))
    assert rows["sd r* - r_theta"].max() < 1e-4  # r_theta = r*: the theorem's expansion is exact here
    assert rows["sd r_theta"].min() > 0.3
    assert rows["Z+ Z-"].min() > 1.0  # Z+ Z- >= 1 (Cauchy-Schwarz), strictly where r_theta varies
    # grad J vanishes at pi* = pi_target: its direction is undefined, and the cosines say so
    assert all(math.isnan(v) for v in rows["vanilla measured"])


def test_in_parameter_space_the_exact_share_linearisation_is_along_grad_j():
    """Off the path (a policy that is neither pi_ref nor pi*), the linearised exact-share T-PILAF gradient is
    proportional to grad J as weights over responses, so also in the network's parameters; vanilla's is not."""
    reference, _, table = world()
    elsewhere = perturbed_policy_reward(reference, prompt_length=2, noise=3.0, seed=7).target.requires_grad_(True)
    rows = pd.DataFrame(policy_rows(elsewhere, table, beta=1.0, top=VOCAB**LENGTH))
    assert rows["t_pilaf_exact predicted (params)"].min() > 1 - 1e-6
    assert rows["vanilla predicted (params)"].max() < 1 - 1e-4
    assert rows["vanilla measured (params)"].min() > 0  # a descent direction all the same
