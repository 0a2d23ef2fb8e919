"""On-disk caches: a JSON result is computed once per key, and the weights fingerprint that keys
J* tells apart models that one config can produce in different code versions."""

from __future__ import annotations

import copy

import torch

from pilaf_exp.infra.cache import load_or_compute_json, weights_fingerprint
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.builders import seeded_reward_model, tiny_llama


def test_json_cache_computes_once_per_spec(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"value": float(len(calls))}

    first = load_or_compute_json(tmp_path, {"stage": "x", "beta": 0.1}, compute)
    again = load_or_compute_json(tmp_path, {"beta": 0.1, "stage": "x"}, compute)  # same spec, other key order
    other = load_or_compute_json(tmp_path, {"stage": "x", "beta": 0.2}, compute)
    assert first == again == {"value": 1.0}
    assert other == {"value": 2.0}
    assert len(calls) == 2


def test_weights_fingerprint_follows_weights_and_calibration():
    policy = tiny_llama(8, hidden_size=16, num_layers=1, num_heads=2, seed=0)
    oracle = RewardOracle(seeded_reward_model(8, hidden_size=16, num_layers=1, num_heads=2, seed=1), pad_token_id=0)
    base = weights_fingerprint(policy, oracle)
    assert weights_fingerprint(copy.deepcopy(policy), copy.deepcopy(oracle)) == base  # content, not identity

    recalibrated = copy.deepcopy(oracle)
    recalibrated.calibrate(torch.tensor([0.0, 1.0, 3.0]), target_std=2.0)  # only the shift/scale buffers move
    assert weights_fingerprint(policy, recalibrated) != base

    nudged = copy.deepcopy(policy)
    with torch.no_grad():
        next(nudged.parameters()).view(-1)[0] += 1e-6
    assert weights_fingerprint(nudged, oracle) != base
    assert weights_fingerprint(oracle, policy) != base  # which model is which matters
