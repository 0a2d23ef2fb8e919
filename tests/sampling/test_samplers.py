"""Samplers: which distribution each response comes from, the PILAF split, best-of-N's choice, cost."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from pilaf_exp.infra.cli import compose_config, sampler_names
from pilaf_exp.models.builders import tiny_llama
from pilaf_exp.models.logprobs import implicit_reward, sequence_logprob
from pilaf_exp.sampling.decoding import MINUS, PLUS, POLICY, REFERENCE, SOURCES, DecodeSpec, decode
from pilaf_exp.sampling.samplers import BestOfNSampler, HybridSampler, PilafSampler, VanillaSampler

VOCAB, SPEC = 10, DecodeSpec(max_new_tokens=5)


@pytest.fixture(scope="module")
def models():
    policy = tiny_llama(VOCAB, hidden_size=32, num_layers=1, num_heads=2, seed=0).eval()
    reference = tiny_llama(VOCAB, hidden_size=32, num_layers=1, num_heads=2, seed=1).eval()
    with torch.no_grad():  # sharp, different first-token distributions
        policy.lm_head.weight.mul_(40)
        reference.lm_head.weight.mul_(40)
    return policy, reference


def prompts(count: int, same: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[1, 2, 3, 4]]).repeat(count, 1) if same else torch.randint(0, VOCAB, (count, 4))
    return ids, torch.ones_like(ids)


def first_token_distribution(model, prompt: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(input_ids=prompt[:1]).logits[0, -1].double(), -1)


def assert_follows(tokens: torch.Tensor, target: torch.Tensor, other: torch.Tensor) -> None:
    freq = torch.bincount(tokens, minlength=VOCAB).double() / len(tokens)
    stderr = (target * (1 - target) / len(tokens)).sqrt().clamp(min=1e-4)
    assert ((freq - target).abs() <= 5 * stderr).all()
    assert 0.5 * (freq - other).abs().sum() > 5 * 0.5 * (freq - target).abs().sum()  # not the other model


def test_vanilla_pairs_come_from_the_policy(models):
    policy, reference = models
    ids, mask = prompts(10_000, same=True)
    pairs = VanillaSampler().sample(policy, reference, ids, mask, SPEC, torch.Generator().manual_seed(0))
    assert (pairs.source_a == POLICY).all() and (pairs.source_b == POLICY).all()
    assert pairs.generation_passes / len(pairs) == pytest.approx(2.0)
    pol, ref = first_token_distribution(policy, ids), first_token_distribution(reference, ids)
    assert_follows(pairs.response_a[:, 0], pol, ref)
    assert_follows(pairs.response_b[:, 0], pol, ref)


def test_hybrid_draws_one_response_from_each_model(models):
    policy, reference = models
    ids, mask = prompts(10_000, same=True)
    pairs = HybridSampler().sample(policy, reference, ids, mask, SPEC, torch.Generator().manual_seed(0))
    assert (pairs.source_a == POLICY).all() and (pairs.source_b == REFERENCE).all()
    assert pairs.generation_passes / len(pairs) == pytest.approx(2.0)
    pol, ref = first_token_distribution(policy, ids), first_token_distribution(reference, ids)
    assert_follows(pairs.response_a[:, 0], pol, ref)
    assert_follows(pairs.response_b[:, 0], ref, pol)


def test_pilaf_splits_pairs_half_vanilla_half_interpolated(models):
    policy, reference = models
    n = 4000
    ids, mask = prompts(n)
    pairs = PilafSampler(coef=0.1).sample(policy, reference, ids, mask, SPEC, torch.Generator().manual_seed(0))
    interpolated = pairs.source_a == PLUS
    assert ((pairs.source_b == MINUS) == interpolated).all()  # (plus, minus) or (policy, policy) only
    assert (pairs.source_a[~interpolated] == POLICY).all() and (pairs.source_b[~interpolated] == POLICY).all()
    fraction = interpolated.double().mean().item()
    assert abs(fraction - 0.5) < 4 * (0.25 / n) ** 0.5
    # Passes per pair: 2 for a vanilla pair, 4 for an interpolated one (both models, both responses).
    assert pairs.generation_passes / n == pytest.approx(2 + 2 * fraction)
    for share, expected in ((1.0, 4.0), (0.0, 2.0)):
        sampler = PilafSampler(coef=0.1, interpolated_fraction=share)
        out = sampler.sample(policy, reference, ids[:64], mask[:64], SPEC, torch.Generator().manual_seed(0))
        assert out.generation_passes / 64 == pytest.approx(expected)


def test_best_of_n_returns_argmax_and_argmin_of_the_implicit_reward():
    # Unsharpened models, so the N candidates of a prompt differ and their rewards are distinct.
    policy = tiny_llama(VOCAB, hidden_size=32, num_layers=1, num_heads=2, seed=0).eval()
    reference = tiny_llama(VOCAB, hidden_size=32, num_layers=1, num_heads=2, seed=1).eval()
    n, batch, beta = 6, 32, 0.1
    ids, mask = prompts(batch)
    sampler = BestOfNSampler(n=n, beta=beta)
    pairs = sampler.sample(policy, reference, ids, mask, SPEC, torch.Generator().manual_seed(3))
    # Reproduce the candidates independently: same generator seed, candidate r of prompt i is row r*B + i.
    all_ids, all_mask = ids.repeat(n, 1), mask.repeat(n, 1)
    out = decode(
        policy, reference, all_ids, all_mask, torch.full((n * batch,), POLICY), SPEC, torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        rewards = implicit_reward(
            sequence_logprob(policy, all_ids, all_mask, out.tokens, out.mask),
            sequence_logprob(reference, all_ids, all_mask, out.tokens, out.mask),
            beta,
        ).view(n, batch)
    candidates = out.tokens.view(n, batch, -1)
    rows = torch.arange(batch)
    assert torch.equal(pairs.response_a, candidates[rewards.argmax(0), rows])
    assert torch.equal(pairs.response_b, candidates[rewards.argmin(0), rows])
    assert (rewards.max(0).values > rewards.min(0).values).all()
    assert pairs.generation_passes / batch == pytest.approx(n)
    assert pairs.selection_passes / batch == pytest.approx(n)  # reference scoring only at temperature 1


def test_sampling_cost_ratios_match_the_cost_model(models):
    policy, reference = models
    ids, mask = prompts(2000)
    cost = {}
    for name, sampler in {
        "vanilla": VanillaSampler(),
        "pilaf": PilafSampler(coef=0.1),
        "best_of_n": BestOfNSampler(n=8),
    }.items():
        pairs = sampler.sample(policy, reference, ids, mask, SPEC, torch.Generator().manual_seed(1))
        cost[name] = pairs.generation_passes / len(pairs)
    assert cost["best_of_n"] / cost["vanilla"] == pytest.approx(4.0)
    assert abs(cost["pilaf"] / cost["vanilla"] - 1.5) < 4 * (0.25 / 2000) ** 0.5


@pytest.mark.parametrize("name", sampler_names())
def test_every_configured_sampler_gives_one_reproducible_pair_per_prompt(models, name):
    """Every sampler in conf/sampler/ (a new one included, with no test of its own yet): one pair
    per prompt with valid sources and a measured cost, and the same pairs from the same seed."""
    policy, reference = models
    sampler = instantiate(compose_config("output_dir=.", f"sampler={name}").sampler)
    ids, mask = prompts(64)
    pairs = sampler.sample(policy, reference, ids, mask, SPEC, torch.Generator().manual_seed(3))
    assert len(pairs) == 64 and pairs.response_a.shape == pairs.response_b.shape == (64, SPEC.max_new_tokens)
    assert torch.equal(pairs.prompt_ids, ids)
    for source in (pairs.source_a, pairs.source_b):
        assert source.shape == (64,) and bool(((source >= 0) & (source < len(SOURCES))).all())
    assert pairs.generation_passes / len(pairs) >= 2 - 1e-9  # two responses, each decoded by at least one model
    again = sampler.sample(policy, reference, ids, mask, SPEC, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(pairs.tensors(), again.tensors()))
    other = sampler.sample(policy, reference, ids, mask, SPEC, torch.Generator().manual_seed(4))
    assert not torch.equal(pairs.response_a, other.response_a)
