"""The decode engines: the lean stacked / separate decoder samples exactly what the models'
own forward (recomputed from scratch, no cache) gives, on Llama and on Qwen2 with GQA and
q/k/v biases, and `auto` falls back where the lean decoder does not apply."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, Qwen2Config

from pilaf_exp.infra.errors import ConfigError
from pilaf_exp.models.builders import tiny_llama
from pilaf_exp.sampling import engines
from pilaf_exp.sampling.decoding import (
    MINUS,
    PLUS,
    POLICY,
    REFERENCE,
    DecodeSpec,
    decode,
    mixture_weights,
)
from pilaf_exp.sampling.engines import choose_engine

VOCAB = 12
ENGINES = ("stacked", "separate", "transformers")


def sharpen(model):
    # Random init gives near-uniform next-token distributions; sharper heads make errors visible.
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    return model.eval()


def qwen2(seed: int):
    """Qwen2 layout: grouped-query attention (4 query heads, 2 KV heads) and q/k/v biases."""
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=500.0,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    with torch.no_grad():
        for layer in model.model.layers:  # HF initialises biases to zero; make them matter
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(std=0.5)
    return sharpen(model)


ARCHITECTURES = {
    "llama": lambda seed: sharpen(tiny_llama(VOCAB, hidden_size=32, num_layers=2, num_heads=2, seed=seed)),
    "qwen2-gqa-bias": qwen2,
}


def exact_logprobs(policy, reference, prompts, masks, sources, out, coef, temperature):
    """log-prob of every sampled token under the mixture, from one full no-cache forward per model."""
    ids = torch.cat([prompts, out.tokens], 1)
    mask = torch.cat([masks, out.mask], 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = [m(input_ids=ids, attention_mask=mask, position_ids=positions).logits for m in (policy, reference)]
    w = mixture_weights(sources, coef)[:, :, None, None]
    width = prompts.shape[1]
    mixed = (w[:, 0] * logits[0] + w[:, 1] * logits[1])[:, width - 1 : -1]  # predicts each response token
    logp = torch.log_softmax(mixed / temperature, -1).gather(-1, out.tokens[..., None]).squeeze(-1)
    return logp * out.mask


@pytest.mark.parametrize(
    "limits", [(10**9, 10**9), (0, 10**9), (0, 0)], ids=["fused-stacked", "unfused-stacked", "per-model"]
)
@pytest.mark.parametrize("padded", [True, False], ids=["left-padded", "unpadded"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_samples_from_the_exact_mixture(architecture, engine, padded, limits, monkeypatch):
    # Fused projections (tiny models), stacked weights over equal row sets (small ones; here 18
    # policy and 18 reference rows) and one matmul per model per projection are all exact.
    monkeypatch.setattr(engines, "FUSE_MAX_PARAMETERS", limits[0])
    monkeypatch.setattr(engines, "STACK_MAX_PARAMETERS", limits[1])
    policy, reference = ARCHITECTURES[architecture](0), ARCHITECTURES[architecture](1)
    coef, temperature = 0.7, 1.5
    generator = torch.Generator().manual_seed(3)
    prompts = torch.randint(0, VOCAB, (24, 5), generator=generator)
    masks = torch.ones_like(prompts)
    if padded:  # left padding of different lengths (the masked path), else plain causal attention
        masks[::2, :2] = 0
        masks[1::4, :4] = 0
    sources = torch.tensor([POLICY, REFERENCE, PLUS, MINUS]).repeat(6)
    spec = DecodeSpec(max_new_tokens=7, temperature=temperature, eos_token_id=VOCAB - 1, engine=engine)
    out = decode(policy, reference, prompts, masks, sources, spec, torch.Generator().manual_seed(0), coef=coef)
    expected = exact_logprobs(policy, reference, prompts, masks, sources, out, coef, temperature)
    assert out.mask.sum() > 24 * 3  # most rows decoded several tokens before any EOS
    assert (out.logprobs - expected).abs().max().item() < 1e-5


def test_engines_draw_the_same_tokens_from_one_generator():
    policy, reference = ARCHITECTURES["llama"](0), ARCHITECTURES["llama"](1)
    prompts = torch.randint(0, VOCAB, (32, 4), generator=torch.Generator().manual_seed(0))
    sources = torch.tensor([POLICY, PLUS, MINUS, REFERENCE]).repeat(8)
    ones = torch.ones_like(prompts)
    draw = lambda engine: decode(  # noqa: E731
        policy, reference, prompts, ones, sources, DecodeSpec(6, engine=engine), torch.Generator().manual_seed(1), 0.2
    )
    outs = [draw(engine) for engine in ENGINES]
    for out in outs[1:]:
        assert torch.equal(out.tokens, outs[0].tokens)
        assert out.positions == outs[0].positions  # logical cost is the engine's business, not the count's


def test_stacked_engine_runs_unequal_row_sets_exactly():
    policy, reference = ARCHITECTURES["llama"](0), ARCHITECTURES["llama"](1)
    prompts = torch.randint(0, VOCAB, (8, 4), generator=torch.Generator().manual_seed(0))
    # The policy on all 8 rows, the reference on 3: one ragged batch of 11 rows, none padded.
    sources = torch.tensor([POLICY, PLUS, POLICY, POLICY, MINUS, POLICY, PLUS, POLICY])
    per_row = 4 + 6 - 1
    outs = {}
    for engine in ("stacked", "transformers"):
        spec = DecodeSpec(6, engine=engine)
        out = decode(policy, reference, prompts, torch.ones_like(prompts), sources, spec, torch.Generator(), coef=0.4)
        assert out.positions == {"policy": 8 * per_row, "reference": 3 * per_row}
        outs[engine] = out
    assert torch.equal(outs["stacked"].tokens, outs["transformers"].tokens)
    assert (outs["stacked"].logprobs - outs["transformers"].logprobs).abs().max() < 1e-5


def test_auto_engine_choice_and_errors():
    llama = [ARCHITECTURES["llama"](0), ARCHITECTURES["llama"](1)]
    assert choose_engine(llama, "auto") == "stacked"
    assert choose_engine(llama[:1], "auto") == "stacked"
    assert choose_engine([llama[0], ARCHITECTURES["qwen2-gqa-bias"](0)], "auto") == "separate"
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2))
    assert choose_engine([gpt2], "auto") == "transformers"
    with pytest.raises(ConfigError, match="'stacked' does not support model type 'gpt2'"):
        choose_engine([gpt2], "stacked")
    with pytest.raises(ConfigError, match="'fast' is not one of auto, stacked, separate, transformers"):
        choose_engine(llama, "fast")


def test_unsupported_architecture_decodes_through_transformers():
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2)).eval()
    prompts = torch.randint(0, VOCAB, (4, 3), generator=torch.Generator().manual_seed(0))
    spec = replace(DecodeSpec(3), engine="auto")
    out = decode(gpt2, gpt2, prompts, torch.ones_like(prompts), torch.full((4,), POLICY), spec, torch.Generator())
    assert out.tokens.shape == (4, 3)
