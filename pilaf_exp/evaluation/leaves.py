"""The last levels of the response tree through a Llama-layout backbone, straight on its modules.

Below the cached rows (`R` prefixes of the walk, each with its past in a `DynamicCache`) come V
children each and, for the oracle's rewards, V grandchildren per child: V^2 leaves per row, 7/8
of all the walk's positions. `transformers`' forward of them (`exact.siblings_forward`) spends
most of its time beside the matmuls: cache copies (`batch_repeat_interleave`, then an append),
a 4D mask, RoPE and norms as separate passes over every position. Here, per block of rows:

* nothing is copied: a child attends to its row's past and to itself, a grandchild to its row's
  past, to its parent's own key (one per child, broadcast over the V grandchildren) and to itself;
* every level's tokens sit at one position, so RoPE is a fixed linear map: it is folded into the
  q/k projections with q's scaling and the input norm's weight (`FoldedLayer`), and the
  post-attention norm's weight into gate/up; the first layer's q/k/v of the V tokens are computed
  once for all rows;
* the rows go through in blocks small enough to stay in cache (`BLOCK_ROWS`).

The same arithmetic up to float rounding (the fold reorders the products):
tests/evaluation/test_exact.py checks rewards and log-probs against full-sequence forwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import FullyShardedDataParallel
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

LLAMA_LAYOUT_TYPES = ("llama", "qwen2", "mistral")
BLOCK_ROWS = 64  # cached rows per block (x V^2 = 4,096 leaves): activations of ~1 MB stay in cache


def lean_reason(backbone: nn.Module) -> str | None:
    """None when this module computes `backbone`'s forward; otherwise what it lacks."""
    config = backbone.config
    if config.model_type not in LLAMA_LAYOUT_TYPES:
        return f"model type {config.model_type!r}"
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if not all(hasattr(backbone, name) for name in ("embed_tokens", "rotary_emb", "layers", "norm")):
        return "not a Llama-layout backbone"
    if hasattr(backbone.layers[0].self_attn, "q_norm"):
        return "q/k normalisation"
    norms = [backbone.norm] + [
        n for layer in backbone.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    if not all(type(n).__name__.endswith("RMSNorm") and hasattr(n, "variance_epsilon") for n in norms):
        return "a norm that is not the model type's own RMSNorm"
    if not all(hasattr(layer.mlp, name) for layer in backbone.layers for name in ("gate_proj", "up_proj", "act_fn")):
        return "not a gated MLP"
    # Under FSDP a module's weights outside its forward are shards: only the model's own forward gathers them.
    if any(isinstance(m, FullyShardedDataParallel) for m in backbone.modules()) or any(
        type(p).__name__ == "DTensor" for p in backbone.parameters()
    ):
        return "sharded parameters (FSDP)"
    return None


def _weight_and_bias(linear: nn.Linear) -> tuple[Tensor, Tensor]:
    """[in, out] weight and [out] bias (zeros where the layer has none)."""
    weight = linear.weight
    bias = linear.bias if linear.bias is not None else weight.new_zeros(linear.out_features)
    return weight.t(), bias


@dataclass
class FoldedLayer:
    """One decoder layer for tokens at one fixed position: (rms(x) @ qkv + qkv_bias) gives q (RoPE'd,
    scaled), k (RoPE'd) and v; (rms(x) @ gate_up + gate_up_bias) the MLP's gate and up."""

    qkv: Tensor  # [H, (heads + 2 kv_heads) d]
    qkv_bias: Tensor
    eps: float
    o_proj: nn.Module
    gate_up: Tensor  # [H, 2 I]
    gate_up_bias: Tensor
    post_eps: float
    down_proj: nn.Module
    act: Callable[[Tensor], Tensor]
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def fold(cls, layer: nn.Module, cos: Tensor, sin: Tensor) -> FoldedLayer:
        attention, mlp = layer.self_attn, layer.mlp
        d = attention.head_dim

        def rope(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
            # RoPE at one position is linear in each head's d-vector: apply it to every input's column.
            stacked = torch.cat([weight, bias[None]]).unflatten(-1, (-1, d)).transpose(0, 1)[None]  # [1, h, H+1, d]
            rotated = apply_rotary_pos_emb(stacked, stacked, cos, sin)[0][0].transpose(0, 1).flatten(-2)
            return rotated[:-1], rotated[-1]  # [H, h d], [h d]

        (wq, bq), (wk, bk), (wv, bv) = (
            _weight_and_bias(p) for p in (attention.q_proj, attention.k_proj, attention.v_proj)
        )
        wq, bq = rope(wq, bq)
        wk, bk = rope(wk, bk)
        scale = attention.scaling
        norm = layer.input_layernorm.weight[:, None]
        (wg, bg), (wu, bu) = (_weight_and_bias(p) for p in (mlp.gate_proj, mlp.up_proj))
        post = layer.post_attention_layernorm.weight[:, None]
        return cls(
            qkv=torch.cat([wq * scale, wk, wv], dim=1) * norm,
            qkv_bias=torch.cat([bq * scale, bk, bv]),
            eps=layer.input_layernorm.variance_epsilon,
            o_proj=attention.o_proj,
            gate_up=torch.cat([wg, wu], dim=1) * post,
            gate_up_bias=torch.cat([bg, bu]),
            post_eps=layer.post_attention_layernorm.variance_epsilon,
            down_proj=mlp.down_proj,
            act=mlp.act_fn,
            heads=attention.config.num_attention_heads,
            kv_heads=attention.config.num_key_value_heads,
            head_dim=d,
        )

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [r, Q, H] -> q [r, heads, Q, d], k and v [r, kv_heads, Q, d]."""
        qkv = torch.addmm(self.qkv_bias, _rms(x, self.eps).flatten(0, -2), self.qkv).unflatten(0, x.shape[:-1])
        q, k, v = (
            qkv.unflatten(-1, (-1, self.head_dim))
            .transpose(-2, -3)
            .split([self.heads, self.kv_heads, self.kv_heads], dim=-3)
        )
        return q, k, v

    def mlp(self, x: Tensor) -> Tensor:
        gate, up = (torch.addmm(self.gate_up_bias, _rms(x, self.post_eps).flatten(0, -2), self.gate_up)).chunk(2, -1)
        return self.down_proj(self.act(gate) * up).unflatten(0, x.shape[:-1])


def _rms(x: Tensor, eps: float) -> Tensor:
    """LlamaRMSNorm without its weight (folded into the next projection)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _expand_kv(*tensors: Tensor, groups: int) -> list[Tensor]:
    """Grouped-query attention: each kv head serves `groups` query heads (dim -3)."""
    return [t.repeat_interleave(groups, dim=-3) if groups > 1 else t for t in tensors]


def _attend(q, k, v, past_k, past_v, parent_k=None, parent_v=None) -> Tensor:
    """The Q queries of each row ([r or 1, heads, Q, d], scaled) over their row's past ([r, heads, t, d]),
    their parent's own key and value when given ([r, heads, G, d]: query g*C + c is child c of parent
    g) and their own: [r, Q, heads * d]."""
    rows, heads, queries = past_k.shape[0], q.shape[1], q.shape[2]
    scores = [q @ past_k.transpose(-1, -2)]  # [r, heads, Q, t]
    if parent_k is not None:
        groups = parent_k.shape[2]
        per_parent = q.unflatten(2, (groups, -1)) * parent_k[:, :, :, None]  # [r, heads, G, C, d]
        scores.append(per_parent.sum(-1).flatten(2)[..., None])
    scores.append((q * k).sum(-1, keepdim=True).expand(rows, heads, queries, 1))
    weights = torch.cat(scores, dim=-1).softmax(-1)
    t = past_k.shape[2]
    out = weights[..., :t] @ past_v
    if parent_v is not None:
        groups = parent_v.shape[2]
        out = out + (weights[..., t : t + 1].unflatten(2, (groups, -1)) * parent_v[:, :, :, None]).flatten(2, 3)
    out = out + weights[..., -1:] * v
    return out.transpose(1, 2).flatten(-2)


def _level(layers, past, x0, shared, parents=None):
    """One level of new tokens through every layer: x0 [1, Q, H] their embeddings (the same for every
    row), `shared` layer 0's q/k/v of them. Returns the final residual stream [r, Q, H] and each
    layer's (k, v) of the new tokens (the next level's parent keys)."""
    x, keys = x0, []
    for index, (layer, (past_k, past_v)) in enumerate(zip(layers, past)):
        q, k, v = shared if index == 0 else layer.project(x)
        groups = layer.heads // layer.kv_heads
        past_k, past_v, k, v = _expand_kv(past_k, past_v, k, v, groups=groups)
        k, v = k.expand(past_k.shape[0], *k.shape[1:]), v.expand(past_k.shape[0], *v.shape[1:])
        keys.append((k, v))
        parent = parents[index] if parents is not None else (None, None)
        x = x + layer.o_proj(_attend(q, k, v, past_k, past_v, *parent))
        x = x + layer.mlp(x)
    return x, keys


@torch.inference_mode()
def descendant_states(backbone: nn.Module, cache: DynamicCache, vocab: int, position: int, depth: int) -> Tensor:
    """[rows * V^depth, H]: the final hidden state (after the backbone's last norm) of every
    descendant `depth` (1 or 2) levels below each of the cache's rows, the children at `position`,
    in the walk's order (row-major, the last token varying fastest)."""
    if depth not in (1, 2):
        raise ValueError(f"depth={depth} is not supported: expected 1 or 2")
    device = backbone.embed_tokens.weight.device
    tokens = torch.arange(vocab, device=device)
    embedded = backbone.embed_tokens(tokens)[None]  # [1, V, H]: the same for every row
    levels = []
    for offset in range(depth):
        cos, sin = backbone.rotary_emb(embedded, torch.full((1, 1), position + offset, device=device))
        layers = [FoldedLayer.fold(layer, cos, sin) for layer in backbone.layers]
        x0 = embedded.repeat(1, vocab**offset, 1)  # [1, V^(offset+1), H]: each parent's V children
        q, k, v = layers[0].project(x0)
        levels.append((layers, x0, (q, k, v)))
    rows = cache.layers[0].keys.shape[0]
    blocks = []
    for start in range(0, rows, BLOCK_ROWS):
        block = slice(start, start + BLOCK_ROWS)
        past = [(layer.keys[block], layer.values[block]) for layer in cache.layers]  # views, no copy
        layers, x0, shared = levels[0]
        x, parents = _level(layers, past, x0, shared)
        if depth == 2:
            layers, x0, shared = levels[1]
            x, _ = _level(layers, past, x0, shared, parents)
        blocks.append(backbone.norm(x).flatten(0, 1))
    return torch.cat(blocks)
