"""On-disk caches: a result is computed once per key, and the weights fingerprint that keys
J* tells apart models that one config can produce in different code versions."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from pilaf_exp.infra.cache import cache_key, load_or_compute_object, weights_fingerprint
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.builders import seeded_reward_model, tiny_llama


def test_a_cached_result_is_computed_once_per_spec(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"value": float(len(calls))}

    first = load_or_compute_object(tmp_path, {"stage": "x", "beta": 0.1}, compute)
    again = load_or_compute_object(tmp_path, {"beta": 0.1, "stage": "x"}, compute)  # same spec, other key order
    other = load_or_compute_object(tmp_path, {"stage": "x", "beta": 0.2}, compute)
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


def test_a_change_to_the_code_that_computes_a_cache_invalidates_it(tmp_path, monkeypatch, small_cfg):
    """The SFT, exact-evaluation and iterative round-1 caches are keyed by their code's source too."""
    import importlib

    from pilaf_exp.build import reference_spec
    from pilaf_exp.infra.cache import source_fingerprint

    package = tmp_path / "fake_stage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text("STEPS = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    before = source_fingerprint("fake_stage"), source_fingerprint("fake_stage.train")
    (package / "train.py").write_text("STEPS = 2\n")
    after = source_fingerprint("fake_stage"), source_fingerprint("fake_stage.train")
    assert before[0] != after[0] and before[1] != after[1]

    cfg = small_cfg()
    spec = reference_spec(cfg)
    assert spec["code"] == source_fingerprint("pilaf_exp.data", "pilaf_exp.models", "pilaf_exp.training.sft")
    monkeypatch.setattr("pilaf_exp.build.SFT_CODE", "other code")
    assert cache_key(reference_spec(cfg)) != cache_key(spec)


def _slow_count(root: str, calls: str) -> dict:
    import time

    def compute():
        with open(calls, "a") as out:
            out.write("computed\n")
        time.sleep(1.0)  # long enough for the other process to miss the entry meanwhile
        return {"value": 1.0}

    return load_or_compute_object(Path(root), {"stage": "shared"}, compute)


def test_concurrent_misses_compute_an_entry_once(tmp_path):
    """Two processes that miss one entry at once: the second waits for the first's result."""
    import multiprocessing

    calls = tmp_path / "calls.txt"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_slow_count, [(str(tmp_path / "cache"), str(calls))] * 2)
    assert results == [{"value": 1.0}] * 2
    assert calls.read_text().splitlines() == ["computed"]
