"""Lean KV-cached decoding for Llama-family causal LMs, one model or several in one operator sequence.

`transformers`' forward spends a good part of a decode step of a small model in Python and in
mask/cache plumbing. `StackedDecoder` runs the same arithmetic (RMSNorm, RoPE from the model's
own rotary table, SDPA, gated MLP) straight on the models' weights with a preallocated KV cache.

Several same-architecture models (PILAF's policy and reference) decode as one ragged batch: the
rows are laid out model after model ("segments"), every elementwise operator, the attention and
the KV cache are shared by all rows, and only the linear layers run once per segment, each on its
own model's weights. No row is padded, so PILAF's step costs the policy's rows plus the
reference's rows (the 3/2 cost model), in nearly the operator count of one model.
When the models' segments are equal-sized (hybrid; PILAF's mixture rows) their weights can be
stacked for one batched matmul per projection (`stack`, a copy of the weights). For tiny models
the q/k/v (with RoPE's rotation folded in) and gate/up projections are also fused into one matmul
each (`fuse`, a copy of those weights).

Supported: the Llama layer layout (q/k/v/o projections with optional bias, gate/up/down MLP,
RMSNorm, RoPE, GQA): Llama, Qwen2, Mistral without a sliding window. `layer_weights.unsupported_reason`
says why any other model falls back to the `transformers` forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN

from pilaf_exp.sampling.layer_weights import Batched, LayerWeights


class StackedDecoder:
    """Same-architecture models decoding their own rows of a decode batch, in lockstep.

    rows: one [r_m] index tensor per model into the decode batch; model m's rows form segment m
    of this decoder's batch (rows laid out model after model).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        rows: Sequence[Tensor],
        max_positions: int,
        fuse: bool = False,
        stack: bool = False,
    ) -> None:
        config = models[0].config
        self.flat_rows = torch.cat(list(rows))  # [N]
        self.sizes = [len(r) for r in rows]  # rows per segment
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        self.eps = config.rms_norm_eps
        self.act = ACT2FN[config.hidden_act]
        self.rotary = models[0].model.rotary_emb
        # Equal-sized segments (hybrid; PILAF's mixture rows): stacked weights, one bmm per projection.
        stack = stack and len(models) > 1 and len(set(self.sizes)) == 1
        per_layer = zip(*(m.model.layers for m in models))
        self.layers = [LayerWeights(layers, fuse, self.head_dim, stack) for layers in per_layer]
        self.embeddings = [m.model.embed_tokens.weight for m in models]
        self.norm = [m.model.norm.weight for m in models]
        self.head = [(m.lm_head.weight, m.lm_head.bias) for m in models]
        weight = self.embeddings[0]
        shape = (len(self.flat_rows), self.kv_heads, max_positions, self.head_dim)
        self.keys = [torch.empty(shape, dtype=weight.dtype, device=weight.device) for _ in self.layers]
        self.values = [torch.empty(shape, dtype=weight.dtype, device=weight.device) for _ in self.layers]
        self.length = 0  # cache columns filled
        self.padded: bool | None = None  # whether any prompt is padded (known at the first call)
        self.rope_table = self._rope_table(max_positions)
        self.row_norms: dict[int, Tensor] = {}  # id(weights list) -> [N, 1, H] per-row norm weights

    def _rope_table(self, positions: int) -> tuple[Tensor, Tensor] | None:
        """cos, sin [positions, d] from the model's own rotary module, computed once; None for the
        rope types whose frequencies depend on the sequence length (recomputed per call then)."""
        if getattr(self.rotary, "rope_type", "default") in ("dynamic", "longrope"):
            return None
        ids = torch.arange(positions, device=self.embeddings[0].device)[None]
        cos, sin = self.rotary(self.embeddings[0][:1], ids)
        return cos[0], sin[0]

    def _rope(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin [N, s, d] for each row's positions."""
        if self.rope_table is None:
            return self.rotary(x, position_ids)
        cos, sin = self.rope_table
        return cos[position_ids], sin[position_ids]

    def _segments(self, x: Tensor) -> list[Tensor]:
        """x [N, ...] -> one [r_m, ...] view per model."""
        return list(x.split(self.sizes)) if len(self.sizes) > 1 else [x]

    def _linear(self, x: Tensor, weights: list[tuple[Tensor, Tensor | None]] | Batched) -> Tensor:
        """x [N, s, in] -> [N, s, out], each segment through its own model's weight: one batched
        matmul over equal segments, else one matmul per model written into slices of one output."""
        if isinstance(weights, Batched):
            m = len(weights.weight)
            out = torch.bmm(x.reshape(m, -1, x.shape[-1]), weights.weight.transpose(1, 2))  # [M, R*s, out]
            if weights.bias is not None:
                out = out + weights.bias[:, None]
            return out.view(*x.shape[:-1], -1)
        if len(weights) == 1:
            return F.linear(x, *weights[0])
        flat = x.reshape(-1, x.shape[-1])  # [N*s, in]
        out = flat.new_empty(len(flat), len(weights[0][0]))
        start = 0
        for (weight, bias), rows in zip(weights, self.sizes):
            end = start + rows * x.shape[1]
            if bias is None:
                torch.mm(flat[start:end], weight.t(), out=out[start:end])
            else:
                torch.addmm(bias, flat[start:end], weight.t(), out=out[start:end])
            start = end
        return out.view(*x.shape[:-1], -1)

    def _rms_norm(self, x: Tensor, weights: list[Tensor]) -> Tensor:
        # As transformers' LlamaRMSNorm: normalise in fp32, scale in the model's dtype.
        if x.dtype == torch.float32:  # one fused operator (and a per-row scale for several models)
            if len(weights) == 1:
                return F.rms_norm(x, x.shape[-1:], weights[0], self.eps)
            return self._row_weights(weights) * F.rms_norm(x, x.shape[-1:], None, self.eps)
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return (weights[0] if len(weights) == 1 else self._row_weights(weights)) * normed

    def _row_weights(self, weights: list[Tensor]) -> Tensor:
        """Each row's own model's norm weight, [N, 1, H] (built once per decode)."""
        key = id(weights)
        if key not in self.row_norms:
            self.row_norms[key] = torch.cat([w.expand(n, -1) for w, n in zip(weights, self.sizes)])[:, None]
        return self.row_norms[key]

    @staticmethod
    def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _attention_inputs(
        self, h: Tensor, layer: LayerWeights, cos: Tensor, sin: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """h [N, s, H] -> q [N, heads, s, d] and k, v [N, kv_heads, s, d], RoPE applied."""
        n, s, d = h.shape[0], h.shape[1], self.head_dim
        if layer.qkv is None:
            q = self._linear(h, layer.q).view(n, s, self.heads, d).transpose(1, 2)
            k = self._linear(h, layer.k).view(n, s, self.kv_heads, d).transpose(1, 2)
            v = self._linear(h, layer.v).view(n, s, self.kv_heads, d).transpose(1, 2)
            return self._rotate(q, cos[:, None], sin[:, None]), self._rotate(k, cos[:, None], sin[:, None]), v
        heads = self.heads + self.kv_heads
        out = self._linear(h, layer.qkv)  # [N, s, (2 * heads + kv_heads) * d]
        qk = out[..., : heads * d].view(n, s, heads, d)
        qk_rotated = out[..., heads * d : 2 * heads * d].view(n, s, heads, d)
        qk = (qk * cos[:, :, None] + qk_rotated * sin[:, :, None]).transpose(1, 2)  # [N, heads, s, d]
        v = out[..., 2 * heads * d :].view(n, s, self.kv_heads, d).transpose(1, 2)
        return qk[:, : self.heads], qk[:, self.heads :], v

    def _attention_mask(self, key_mask: Tensor, steps: int) -> Tensor | None:
        """[N, 1, s, t] boolean: query i (cache column t - s + i) sees valid keys up to itself.
        A query always sees itself, so no row is fully masked (that would give NaN in padding).
        None (plain causal attention) when no prompt is padded."""
        if not self.padded:
            return None
        if steps == 1:  # one new token: every valid key is in its past, and it is itself valid
            return key_mask[:, None, None, :]
        columns = key_mask.shape[1]
        query_col = torch.arange(columns - steps, columns, device=key_mask.device)[:, None]  # [s, 1]
        key_col = torch.arange(columns, device=key_mask.device)[None]  # [1, t]
        causal = key_col <= query_col  # [s, t]
        return ((key_mask[:, None, :] & causal) | (key_col == query_col))[:, None]

    def next_logits(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Feed this step's tokens (input_ids [B, s] over the whole decode batch, attention_mask
        [B, cache columns + s], position_ids [B, s]); returns next-token logits [N, V] (fp32),
        segment after segment."""
        ids = input_ids[self.flat_rows]  # [N, s]
        s = ids.shape[1]
        x = torch.cat([F.embedding(part, e) for part, e in zip(self._segments(ids), self.embeddings)])  # [N, s, H]
        cos, sin = self._rope(x, position_ids[self.flat_rows])  # [N, s, d]
        if self.padded is None:  # once per decode: the prompts' padding decides the masks
            self.padded = not bool(attention_mask.all())
        mask = self._attention_mask(attention_mask[self.flat_rows].bool(), s)
        start, end = self.length, self.length + s
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            q, k, v = self._attention_inputs(self._rms_norm(x, layer.input_norm), layer, cos, sin)
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            attended = F.scaled_dot_product_attention(
                q,
                keys[:, :, :end],
                values[:, :, :end],
                attn_mask=mask,
                is_causal=mask is None and s > 1,  # the first call (prefill) starts at column 0
                scale=self.scaling,
                enable_gqa=self.kv_heads != self.heads,
            )  # [N, heads, s, d]
            x = x + self._linear(attended.transpose(1, 2).reshape(len(x), s, -1), layer.o)
            h = self._rms_norm(x, layer.post_norm)
            if layer.gate_up is not None:
                gate, up = self._linear(h, layer.gate_up).chunk(2, dim=-1)
            else:
                gate, up = self._linear(h, layer.gate), self._linear(h, layer.up)
            x = x + self._linear(self.act(gate) * up, layer.down)
        self.length = end
        return self._linear(self._rms_norm(x[:, -1:], self.norm), self.head)[:, 0].float()
