"""What the lean decoder (`stacked_decoder.py`) reads from a model: whether it can reproduce the
model's forward (`unsupported_reason`), which models can share one operator sequence
(`architecture_key`), and each decoder layer's weights as it multiplies them (`LayerWeights`: per model,
or q/k/v and gate/up fused into one matrix each, or stacked over the models for one batched matmul).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

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


class Batched(NamedTuple):
    """Projection weights of M models stacked for one batched matmul: [M, out, in], [M, out] | None."""

    weight: Tensor
    bias: Tensor | None


def batched(pairs: list[tuple[Tensor, Tensor | None]]) -> Batched:
    return Batched(
        torch.stack([w for w, _ in pairs]), None if pairs[0][1] is None else torch.stack([b for _, b in pairs])
    )


class LayerWeights:
    """One decoder layer's weights per model: lists of (weight [out, in], bias [out] | None)."""

    def __init__(self, layers: Sequence[nn.Module], fuse: bool, head_dim: int, stack: bool = False) -> None:
        def linear(name: str, parent: str) -> list[tuple[Tensor, Tensor | None]]:
            modules = [getattr(getattr(layer, parent), name) for layer in layers]
            return [(m.weight, m.bias) for m in modules]

        self.q, self.k, self.v, self.o = (linear(p, "self_attn") for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
        self.gate, self.up, self.down = (linear(p, "mlp") for p in ("gate_proj", "up_proj", "down_proj"))
        # [q; k; rotate_half(q); rotate_half(k); v] in one matmul: RoPE is then qk*cos + qk_rot*sin.
        self.qkv = (
            [
                _fuse([q, k, _rotate_half_rows(*q, head_dim), _rotate_half_rows(*k, head_dim), v])
                for q, k, v in zip(self.q, self.k, self.v)
            ]
            if fuse
            else None
        )
        self.gate_up = [_fuse([g, u]) for g, u in zip(self.gate, self.up)] if fuse else None
        if stack:  # equal-sized segments: one batched matmul per projection for all the models
            projections = ("qkv", "gate_up", "o", "down") if fuse else ("q", "k", "v", "gate", "up", "o", "down")
            for name in projections:
                setattr(self, name, batched(getattr(self, name)))
        self.input_norm = [layer.input_layernorm.weight for layer in layers]
        self.post_norm = [layer.post_attention_layernorm.weight for layer in layers]


def _fuse(pairs: list[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor | None]:
    """Concatenate (weight [out_i, in], bias) pairs along out, so one matmul computes them all."""
    weight = torch.cat([w for w, _ in pairs])
    if all(b is None for _, b in pairs):
        return weight, None
    return weight, torch.cat([b if b is not None else w.new_zeros(len(w)) for w, b in pairs])


def _rotate_half_rows(weight: Tensor, bias: Tensor | None, head_dim: int) -> tuple[Tensor, Tensor | None]:
    """The projection whose output is rotate_half(the original's output), per head of head_dim:
    rotate_half(y) = cat(-y[half:], y[:half]) is a signed permutation of y's rows."""
    half = head_dim // 2

    def rotate(t: Tensor) -> Tensor:  # [heads*d, ...]
        per_head = t.reshape(-1, head_dim, *t.shape[1:])
        return torch.cat([-per_head[:, half:], per_head[:, :half]], dim=1).reshape(t.shape)

    return rotate(weight), None if bias is None else rotate(bias)
