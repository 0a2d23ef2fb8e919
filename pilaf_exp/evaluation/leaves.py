"""The last level of the response tree through a Llama-layout backbone, straight on its modules.

The oracle's rewards need a forward of every leaf (V^T positions per prompt, 7/8 of the walk).
`transformers`' forward of the leaves (`exact.siblings_forward`) spends most of its time beside
the matmuls: it appends the V leaves to each row's cache (a copy of the whole cache), builds and
applies a 4D mask, and recomputes the first layer's projections of the same V embeddings for
every row. Here each leaf attends to its row's cached past and to itself, nothing is copied, the
first layer's q/k/v of the V tokens are computed once for all rows, and the rows go through in
a few large blocks (few operator calls: each is a thread barrier). Same arithmetic (the model's own RMSNorm, RoPE,
projections and MLP modules), so the same hidden states to float rounding
(tests/evaluation/test_exact.py checks the rewards against the oracle's full-sequence score).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

LLAMA_LAYOUT_TYPES = ("llama", "qwen2", "mistral")
BLOCK_ROWS = 8192  # cached rows per block (x V leaves): few operator calls, activations in tens of MB


def lean_reason(backbone: nn.Module) -> str | None:
    """None when `leaf_states` computes `backbone`'s forward; otherwise what it lacks."""
    config = backbone.config
    if config.model_type not in LLAMA_LAYOUT_TYPES:
        return f"model type {config.model_type!r}"
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if not all(hasattr(backbone, name) for name in ("embed_tokens", "rotary_emb", "layers", "norm")):
        return "not a Llama-layout backbone"
    if hasattr(backbone.layers[0].self_attn, "q_norm"):
        return "q/k normalisation"
    return None


@torch.inference_mode()
def leaf_states(backbone: nn.Module, cache: DynamicCache, vocab: int, position: int) -> Tensor:
    """[rows, V, H]: the final hidden state (after the backbone's last norm) of each of the V tokens
    appended at `position` to each of the cache's rows, each seeing its row's past and itself."""
    device = backbone.embed_tokens.weight.device
    embedded = backbone.embed_tokens(torch.arange(vocab, device=device))  # [V, H]: the same for every row
    cos, sin = backbone.rotary_emb(embedded[None], torch.full((1, 1), position, device=device))  # [1, 1, d]
    first = backbone.layers[0]
    shared = projections(first.self_attn, first.input_layernorm(embedded), cos, sin)  # layer 0's q, k, v
    rows = cache.layers[0].keys.shape[0]
    blocks = []
    for start in range(0, rows, BLOCK_ROWS):
        block = slice(start, start + BLOCK_ROWS)
        past = [(layer.keys[block], layer.values[block]) for layer in cache.layers]  # views, no copy
        x = embedded
        for index, layer in enumerate(backbone.layers):
            attention = layer.self_attn
            q, k, v = shared if index == 0 else projections(attention, layer.input_layernorm(x), cos, sin)
            x = x + attention.o_proj(attend(q, k, v, *past[index], attention.scaling))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        blocks.append(backbone.norm(x))
    return torch.cat(blocks)


def projections(attention: nn.Module, h: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """h [..., V, H] -> q [..., heads, V, d] and k, v [..., kv_heads, V, d], RoPE applied."""
    d = attention.head_dim
    q, k, v = (
        proj(h).unflatten(-1, (-1, d)).transpose(-2, -3)
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj)
    )
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def attend(q: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, scaling: float) -> Tensor:
    """Each of the V queries of a row over its row's past keys ([r, kv_heads, t, d]) and its own
    key: [r, V, heads * d]. q is [r or 1, heads, V, d]; k, v the same with kv_heads."""
    groups = q.shape[-3] // past_k.shape[1]
    if groups > 1:  # grouped-query attention: each kv head serves `groups` query heads
        past_k, past_v, k, v = (t.repeat_interleave(groups, dim=-3) for t in (past_k, past_v, k, v))
    to_past = q @ past_k.transpose(-1, -2)  # [r, heads, V, t]
    to_itself = (q * k).sum(-1, keepdim=True).expand(*to_past.shape[:-1], 1)
    scores = torch.cat([to_past, to_itself], dim=-1) * scaling
    weights = scores.softmax(-1)  # [r, heads, V, t + 1]
    out = weights[..., :-1] @ past_v + weights[..., -1:] * v  # [r, heads, V, d]
    return out.transpose(1, 2).flatten(-2)
