"""Lean KV-cached decoding for Llama-family causal LMs, one model or several stacked into one.

`transformers`' forward costs ~1.5 ms of Python and mask/cache plumbing per call, which is most
of a decode step for the small models this framework trains on a CPU. `StackedDecoder` runs the
same arithmetic (RMSNorm, RoPE from the model's own rotary module, SDPA, gated MLP) straight on
the models' weights with a preallocated KV cache, so a step is one short operator sequence.

With M > 1 models (PILAF's policy and reference) the weights are stacked [M, out, in] and every
linear layer is one batched matmul over [M, rows, ...]: both models advance in the operator
count of one. That pays when per-operator overhead dominates (small models); for large ones the
caller runs each model on its own rows instead (see `generation.stack_models`).

Supported: the Llama layer layout (q/k/v/o projections with optional bias, gate/up/down MLP,
RMSNorm, RoPE, GQA): Llama, Qwen2, Mistral without a sliding window. `unsupported_reason` says
why any other model falls back to the `transformers` forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN

LLAMA_LAYOUT_TYPES = ("llama", "qwen2", "mistral")


def unsupported_reason(model: nn.Module) -> str | None:
    """None when `StackedDecoder` reproduces `model`'s forward; otherwise what it lacks."""
    config = model.config
    if config.model_type not in LLAMA_LAYOUT_TYPES:
        return f"model type {config.model_type!r}"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "pretraining_tp != 1"
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    body = getattr(model, "model", None)
    if body is None or not hasattr(body, "rotary_emb") or not hasattr(model, "lm_head"):
        return "not a *ForCausalLM with model.rotary_emb"
    attention = body.layers[0].self_attn
    if hasattr(attention, "q_norm") or hasattr(attention, "k_norm"):
        return "q/k normalisation"
    return None


def architecture_key(model: nn.Module) -> tuple:
    """What must match for two models to share one stacked operator sequence."""
    c = model.config
    return (
        c.model_type,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
        getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        c.vocab_size,
        c.hidden_act,
        c.rms_norm_eps,
        next(model.parameters()).dtype,
        tuple(model.model.rotary_emb.inv_freq.tolist()),
        model.model.rotary_emb.attention_scaling,
    )


def _stack(tensors: Sequence[Tensor | None]) -> Tensor | None:
    """[M, ...]; a view (no copy) for one model, so decoding one large model costs no memory."""
    if tensors[0] is None:
        return None
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(list(tensors))


def _fuse(pairs: list[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor | None]:
    """Concatenate (weight [M, out_i, in], bias) pairs along out, so one matmul computes them all."""
    weight = torch.cat([w for w, _ in pairs], dim=1)
    if all(b is None for _, b in pairs):
        return weight, None
    return weight, torch.cat([b if b is not None else w.new_zeros(w.shape[:2]) for w, b in pairs], dim=1)


class _Layer:
    """One decoder layer's weights, stacked over the M models: (weight [M, out, in], bias [M, out] | None)."""

    def __init__(self, layers: Sequence[nn.Module], fuse: bool) -> None:
        def linear(modules: list[nn.Module], name: str) -> tuple[Tensor, Tensor | None]:
            projections = [getattr(m, name) for m in modules]
            return _stack([p.weight for p in projections]), _stack([p.bias for p in projections])

        attn, mlp = [layer.self_attn for layer in layers], [layer.mlp for layer in layers]
        self.q, self.k, self.v, self.o = (linear(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
        self.gate, self.up, self.down = (linear(mlp, p) for p in ("gate_proj", "up_proj", "down_proj"))
        # Fused projections: a copy of the weights, worth it where per-operator overhead dominates.
        self.qkv = _fuse([self.q, self.k, self.v]) if fuse else None
        self.gate_up = _fuse([self.gate, self.up]) if fuse else None
        self.input_norm = _stack([layer.input_layernorm.weight for layer in layers])  # [M, H]
        self.post_norm = _stack([layer.post_attention_layernorm.weight for layer in layers])


class StackedDecoder:
    """M same-architecture models, each decoding its own R rows of a decode batch, in lockstep.

    rows: [M, R] indices into the decode batch (model m reads rows[m]); the caller pads a model's
    row list by repeating a row when the models have different numbers of rows.
    """

    def __init__(self, models: Sequence[nn.Module], rows: Tensor, max_positions: int, fuse: bool = False) -> None:
        base = models[0]
        config = base.config
        self.models, self.rows = len(models), rows
        self.flat_rows = rows.flatten()  # [M*R]
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        self.eps = config.rms_norm_eps
        self.act = ACT2FN[config.hidden_act]
        self.rotary = base.model.rotary_emb
        self.vocab = config.vocab_size
        self.layers = [_Layer(layers, fuse) for layers in zip(*(m.model.layers for m in models))]
        self.embed = _stack([m.model.embed_tokens.weight for m in models])  # [M, V, H]
        self.norm = _stack([m.model.norm.weight for m in models])
        self.head = _stack([m.lm_head.weight for m in models])  # [M, V, H]
        self.head_bias = _stack([m.lm_head.bias for m in models])
        # Row r of model m reads embedding row m*V + token.
        offsets = torch.arange(self.models, device=rows.device) * self.vocab
        self.vocab_offset = offsets.repeat_interleave(rows.shape[1])  # [M*R]
        weight = self.embed
        shape = (rows.numel(), self.kv_heads, max_positions, self.head_dim)
        self.keys = [torch.empty(shape, dtype=weight.dtype, device=weight.device) for _ in self.layers]
        self.values = [torch.empty(shape, dtype=weight.dtype, device=weight.device) for _ in self.layers]
        self.length = 0  # cache columns filled

    def _linear(self, x: Tensor, weight_bias: tuple[Tensor, Tensor | None]) -> Tensor:
        """x [M, N, in] -> [M, N, out] with each model's own weight."""
        weight, bias = weight_bias
        if self.models == 1:
            return F.linear(x[0], weight[0], None if bias is None else bias[0]).unsqueeze(0)
        out = torch.bmm(x, weight.transpose(1, 2))
        return out if bias is None else out + bias[:, None]

    def _attention_inputs(self, h: Tensor, layer: _Layer) -> tuple[Tensor, Tensor, Tensor]:
        """q [M, N, heads*d], k and v [M, N, kv_heads*d]."""
        if layer.qkv is None:
            return self._linear(h, layer.q), self._linear(h, layer.k), self._linear(h, layer.v)
        kv = self.kv_heads * self.head_dim
        return self._linear(h, layer.qkv).split([self.heads * self.head_dim, kv, kv], dim=-1)

    def _rms_norm(self, x: Tensor, weight: Tensor) -> Tensor:
        # As transformers' LlamaRMSNorm: normalise in fp32, scale in the model's dtype.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight[:, None] * x32.to(x.dtype)

    @staticmethod
    def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _attention_mask(self, key_mask: Tensor, steps: int) -> Tensor:
        """[M*R, 1, s, t] boolean: query i (cache column t - s + i) sees valid keys up to itself.
        A query always sees itself, so no row is fully masked (that would give NaN in padding)."""
        columns = key_mask.shape[1]
        query_col = torch.arange(columns - steps, columns, device=key_mask.device)[:, None]  # [s, 1]
        key_col = torch.arange(columns, device=key_mask.device)[None]  # [1, t]
        causal = key_col <= query_col  # [s, t]
        return ((key_mask[:, None, :] & causal) | (key_col == query_col))[:, None]

    def next_logits(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Feed this step's tokens (input_ids [B, s] over the whole decode batch, attention_mask
        [B, cache columns + s], position_ids [B, s]); returns next-token logits [M, R, V] (fp32)."""
        m, rows, s = self.models, self.rows.shape[1], input_ids.shape[1]
        ids = input_ids[self.flat_rows]  # [M*R, s]
        x = self.embed.reshape(m * self.vocab, -1)[ids + self.vocab_offset[:, None]]  # [M*R, s, H]
        cos, sin = self.rotary(x, position_ids[self.flat_rows])  # [M*R, s, d]
        cos, sin = cos[:, None], sin[:, None]
        mask = self._attention_mask(attention_mask[self.flat_rows].bool(), s)
        start, end = self.length, self.length + s
        x = x.reshape(m, rows * s, -1)  # [M, R*s, H]
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            h = self._rms_norm(x, layer.input_norm)
            q, k, v = self._attention_inputs(h, layer)
            q = q.view(m * rows, s, self.heads, self.head_dim).transpose(1, 2)
            keys[:, :, start:end] = self._rotate(k.view(m * rows, s, self.kv_heads, -1).transpose(1, 2), cos, sin)
            values[:, :, start:end] = v.view(m * rows, s, self.kv_heads, -1).transpose(1, 2)
            attended = F.scaled_dot_product_attention(
                self._rotate(q, cos, sin),
                keys[:, :, :end],
                values[:, :, :end],
                attn_mask=mask,
                scale=self.scaling,
                enable_gqa=self.kv_heads != self.heads,
            )  # [M*R, heads, s, d]
            x = x + self._linear(attended.transpose(1, 2).reshape(m, rows * s, -1), layer.o)
            h = self._rms_norm(x, layer.post_norm)
            if layer.gate_up is not None:
                gate, up = self._linear(h, layer.gate_up).chunk(2, dim=-1)
            else:
                gate, up = self._linear(h, layer.gate), self._linear(h, layer.up)
            x = x + self._linear(self.act(gate) * up, layer.down)
        self.length = end
        last = self._rms_norm(x.view(m, rows, s, -1)[:, :, -1], self.norm)  # [M, R, H]
        return self._linear(last, (self.head, self.head_bias)).float()
