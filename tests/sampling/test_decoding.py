"""The two-model KV-cached decoder: exact mixture log-probs, sampled distributions, cost, EOS."""

from __future__ import annotations

import pytest
import torch

from pilaf_exp.models.builders import tiny_llama
from pilaf_exp.sampling.decoding import MINUS, PLUS, POLICY, REFERENCE, DecodeSpec, check_same_vocabulary, decode

VOCAB = 12


@pytest.fixture(scope="module")
def models():
    policy = tiny_llama(VOCAB, hidden_size=32, num_layers=2, num_heads=2, seed=0).eval()
    reference = tiny_llama(VOCAB, hidden_size=32, num_layers=2, num_heads=2, seed=1).eval()
    # Random init gives near-uniform next-token distributions; sharpen the heads so that
    # policy, reference and their interpolations are clearly different distributions.
    with torch.no_grad():
        policy.lm_head.weight.mul_(40)
        reference.lm_head.weight.mul_(40)
    return policy, reference


def mixture_logits(policy, reference, ids, mask, source: int, coef: float) -> torch.Tensor:
    """Next-token logits of the mixture, recomputed from scratch (no cache): [R, V]."""
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        h_pol = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, -1]
        h_ref = reference(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, -1]
    w_pol, w_ref = {POLICY: (1, 0), REFERENCE: (0, 1), PLUS: (1 + coef, -coef), MINUS: (1 - coef, coef)}[source]
    return w_pol * h_pol + w_ref * h_ref


def test_cached_decoding_matches_the_mixture_recomputed_from_scratch(models):
    policy, reference = models
    coef, temperature = 0.7, 1.5
    # Left-padded prompts of different lengths, every source in one batch.
    prompts = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8], [0, 9, 1, 2], [0, 0, 0, 11], [4, 4, 4, 4], [0, 1, 2, 3]])
    masks = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    sources = torch.tensor([POLICY, REFERENCE, PLUS, MINUS, PLUS, MINUS])
    spec = DecodeSpec(max_new_tokens=5, temperature=temperature)
    out = decode(policy, reference, prompts, masks, sources, spec, torch.Generator().manual_seed(0), coef=coef)
    for row, source in enumerate(sources.tolist()):
        for t in range(5):
            ids = torch.cat([prompts[row], out.tokens[row, :t]])[None]
            mask = torch.cat([masks[row], torch.ones(t, dtype=torch.long)])[None]
            logits = mixture_logits(policy, reference, ids, mask, source, coef)
            expected = torch.log_softmax(logits / temperature, -1)[0, out.tokens[row, t]]
            assert abs(out.logprobs[row, t].item() - expected.item()) < 1e-5, (row, t)


def first_token_frequencies(policy, reference, source: int, coef: float, temperature: float, rows: int):
    prompt = torch.tensor([[3, 1, 4, 1]]).repeat(rows, 1)
    spec = DecodeSpec(max_new_tokens=1, temperature=temperature)
    out = decode(
        policy,
        reference,
        prompt,
        torch.ones_like(prompt),
        torch.full((rows,), source),
        spec,
        torch.Generator().manual_seed(source),
        coef=coef,
    )
    counts = torch.bincount(out.tokens[:, 0], minlength=VOCAB).double()
    target = torch.softmax(
        mixture_logits(policy, reference, prompt[:1], torch.ones_like(prompt[:1]), source, coef) / temperature, -1
    )[0].double()
    return counts / rows, target


@pytest.mark.parametrize(("source", "temperature"), [(PLUS, 1.0), (MINUS, 1.0), (POLICY, 1.0), (PLUS, 2.0)])
def test_first_token_frequencies_follow_the_interpolated_softmax(models, source, temperature):
    policy, reference = models
    coef, rows = 0.8, 20_000
    freq, target = first_token_frequencies(policy, reference, source, coef, temperature, rows)
    stderr = (target * (1 - target) / rows).sqrt().clamp(min=1e-4)
    assert ((freq - target).abs() <= 5 * stderr).all(), (freq, target)
    assert 0.5 * (freq - target).abs().sum() < 0.02
    # The test can tell the distributions apart: every other source's target is far from these samples.
    for other in {POLICY, REFERENCE, PLUS, MINUS} - {source}:
        _, other_target = first_token_frequencies(policy, reference, other, coef, temperature, 10)
        assert 0.5 * (freq - other_target).abs().sum() > 0.1, other


def test_reference_runs_only_on_rows_that_need_it(models):
    policy, reference = models
    prompts = torch.randint(0, VOCAB, (8, 4), generator=torch.Generator().manual_seed(1))
    spec, generator = DecodeSpec(max_new_tokens=6), torch.Generator().manual_seed(0)
    ones = torch.ones_like(prompts)
    per_row = 4 + 6 - 1  # prefill of the prompt, then one position per later token
    out = decode(policy, reference, prompts, ones, torch.full((8,), POLICY), spec, generator)
    assert out.positions == {"policy": 8 * per_row, "reference": 0}
    mixed = torch.tensor([POLICY, POLICY, REFERENCE, PLUS, MINUS, POLICY, REFERENCE, PLUS])
    out = decode(policy, reference, prompts, ones, mixed, spec, generator, coef=0.1)
    assert out.positions == {"policy": 6 * per_row, "reference": 5 * per_row}


def test_rows_stop_at_eos_and_are_padded_and_masked_after_it(models):
    policy, reference = models
    eos, pad = 2, 0
    prompts = torch.randint(0, VOCAB, (64, 4), generator=torch.Generator().manual_seed(2))
    spec = DecodeSpec(max_new_tokens=12, temperature=3.0, eos_token_id=eos, pad_token_id=pad)
    out = decode(
        policy,
        reference,
        prompts,
        torch.ones_like(prompts),
        torch.full((64,), POLICY),
        spec,
        torch.Generator().manual_seed(0),
    )
    ended = 0
    for tokens, mask, logp in zip(out.tokens, out.mask, out.logprobs):
        hits = (tokens == eos).nonzero()
        if len(hits):
            ended += 1
            stop = hits[0].item()
            assert mask[: stop + 1].all() and not mask[stop + 1 :].any()  # EOS itself counts
            assert (tokens[stop + 1 :] == pad).all() and (logp[stop + 1 :] == 0).all()
        else:
            assert mask.all()
    assert ended > 5  # the test exercised EOS


def test_vocabularies_must_match():
    with pytest.raises(ValueError, match="vocabulary size 12 != reference vocabulary size 13"):
        check_same_vocabulary(
            tiny_llama(12, hidden_size=16, num_layers=1, num_heads=2),
            tiny_llama(13, hidden_size=16, num_layers=1, num_heads=2),
        )


def test_chunked_decoding_with_eos_stays_exact_and_masks_after_eos(models):
    """Rows decoded 2 at a time, stopping at EOS per row: every kept token's log-prob is the exact
    mixture's, nothing follows an EOS, and the chunks' widths are padded to one."""
    policy, reference = models
    eos, pad, coef = 3, 0, 0.5
    prompts = torch.tensor([[0, 0, 5, 4], [5, 6, 7, 8], [0, 9, 1, 2], [0, 0, 0, 11], [4, 4, 4, 4]])
    masks = (torch.arange(4) >= torch.tensor([2, 0, 1, 3, 0])[:, None]).long()
    sources = torch.tensor([POLICY, PLUS, MINUS, REFERENCE, PLUS])
    spec = DecodeSpec(max_new_tokens=8, eos_token_id=eos, pad_token_id=pad, max_rows=2)
    out = decode(policy, reference, prompts, masks, sources, spec, torch.Generator().manual_seed(3), coef=coef)
    assert out.tokens.shape == out.mask.shape == out.logprobs.shape == (5, 8)
    assert (out.mask.sum(1) < 8).sum() >= 3  # several rows did stop at EOS (one chunk of two early)
    for row, source in enumerate(sources.tolist()):
        length = int(out.mask[row].sum())
        ended = (out.tokens[row, :length] == eos).nonzero()
        if len(ended):  # stopped at its first EOS, which is kept; padding after it
            assert ended[0].item() == length - 1
        else:
            assert length == 8 or length == out.tokens.shape[1]
        assert (out.tokens[row, length:] == pad).all() and (out.logprobs[row, length:] == 0).all()
        for t in range(length):
            ids = torch.cat([prompts[row], out.tokens[row, :t]])[None]
            mask = torch.cat([masks[row], torch.ones(t, dtype=torch.long)])[None]
            expected = torch.log_softmax(mixture_logits(policy, reference, ids, mask, source, coef), -1)
            assert abs(out.logprobs[row, t].item() - expected[0, out.tokens[row, t]].item()) < 1e-5, (row, t)


def test_a_policy_in_training_with_gradient_checkpointing_decodes_as_in_eval(models):
    """model.gradient_checkpointing=true must not switch the KV cache off while sampling mid-training."""
    import copy

    policy, reference = models
    training = copy.deepcopy(policy)
    training.activation_checkpointing_enable()
    training.train()
    prompts = torch.tensor([[1, 2, 3, 4], [0, 5, 6, 7]])
    masks = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    sources = torch.tensor([POLICY, PLUS])
    spec = DecodeSpec(max_new_tokens=6)
    outs = [
        decode(p, reference, prompts, masks, sources, spec, torch.Generator().manual_seed(0), coef=0.3)
        for p in (policy, training)
    ]
    assert torch.equal(outs[0].tokens, outs[1].tokens)
    assert torch.allclose(outs[0].logprobs, outs[1].logprobs, atol=1e-6)


def test_inverse_cdf_sampling_follows_the_distribution_and_never_draws_impossible_tokens():
    from pilaf_exp.sampling.decoding import sample_from

    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.15, 0.05, 0.0])
    rows = 40_000
    logp = probs.log().expand(rows, -1)  # log 0 = -inf: impossible tokens
    tokens = sample_from(logp, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=len(probs)).double()
    assert counts[probs == 0].sum() == 0
    expected = rows * probs.double()
    sigma = (rows * probs.double() * (1 - probs.double())).sqrt()
    assert ((counts - expected).abs() <= 4 * sigma + 1e-9).all(), counts
