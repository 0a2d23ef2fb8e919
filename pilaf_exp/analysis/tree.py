"""Exact sums over every response of one prompt, with gradients: the response tree walked level by
level with a KV cache, as `evaluation.exact.response_logprobs` walks it, but differentiable.

Level d holds the V^d prefixes of length d (prefix-major: `all_sequences` order) and their
next-token log-probs [V^d, V]. A response's log-prob is the sum of one entry per level, so for any
weights w over the V^T responses

    sum_y w(y) grad log pi(y|x) = grad sum_d sum_(p, v) W_d(p, v) log pi(v | x, p),

with W_d(p, v) the total weight of the responses that start with p then v. One walk reads
sum_{d<T} V^d token positions (37,449 for V = 8, T = 6) instead of V^T full sequences; a weight set
that is zero on most responses (a sampler's pairs) walks only the prefixes of the others. The
gradient equals the full-sequence one to float64 rounding (`tests/analysis/test_exact_gradient.py`).
Derivatives of every log pi(y|x) along one direction (a Jacobian-vector product) come from the
same walk in forward mode (`directional_derivatives`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from pilaf_exp.sampling.engines import cache_argument


def level_logprobs(
    model: nn.Module, prompt: Tensor, vocab: int, length: int, active: list[Tensor] | None = None
) -> list[Tensor]:
    """[V^d, V] log pi(v | x, p) for every prefix p of length d = 0 .. length-1 of one prompt ([P],
    unpadded), or with `active` (per level, the sorted prefix rows to expand) only for those:
    [len(active[d]), V]. Differentiable when grad is enabled; float64 when the model is."""
    cache, argument = DynamicCache(), cache_argument(model)
    logits = model(input_ids=prompt[None], use_cache=True, **{argument: cache}).logits[:, -1]  # [1, V]
    dtype = torch.promote_types(logits.dtype, torch.float32)
    levels = [torch.log_softmax(logits.to(dtype), dim=-1)]
    for depth in range(1, length):
        if active is None:  # every prefix: row i*V + v extends prefix i with token v
            cache.batch_repeat_interleave(vocab)
            tokens = torch.arange(vocab, device=prompt.device).repeat(vocab ** (depth - 1))
        else:
            cache.batch_select_indices(torch.searchsorted(active[depth - 1], active[depth] // vocab))
            tokens = active[depth] % vocab
        positions = torch.full((len(tokens), 1), prompt.shape[0] + depth - 1, device=prompt.device)
        out = model(input_ids=tokens[:, None], position_ids=positions, use_cache=True, **{argument: cache})
        levels.append(torch.log_softmax(out.logits[:, -1].to(dtype), dim=-1))
    return levels


def support(weights: Tensor, vocab: int, length: int) -> list[Tensor]:
    """Per level, the prefixes with a response of non-zero weight below them (sorted rows)."""
    return [(weights.reshape(vocab**depth, -1) != 0).any(-1).nonzero().squeeze(-1) for depth in range(length)]


def sum_levels(levels: list[Tensor]) -> Tensor:
    """[V^T] log pi(y|x) of every response, in `all_sequences` order, from the levels."""
    total = levels[0].reshape(-1)
    for level in levels[1:]:
        total = (total[:, None] + level).reshape(-1)
    return total


def level_weights(weights: Tensor, vocab: int, length: int) -> list[Tensor]:
    """[V^T] weights over responses -> per level d, [V^d, V]: the weight of the responses below each
    (prefix, next token)."""
    return [weights.reshape(vocab**depth, vocab, -1).sum(-1) for depth in range(length)]


def flat(tensors: list[Tensor | None], like: list[Tensor]) -> Tensor:
    """One flat vector of per-parameter tensors (None: zeros)."""
    return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, like)])


def weighted_gradients(model: nn.Module, prompt: Tensor, weight_sets: list[Tensor], vocab: int, length: int):
    """For each [V^T] weight set w: the flat gradient of sum_y w(y) log pi(y|x) over the model's
    parameters (float64 vectors; they must require grad). One walk and one backward per set, the walk
    only over the prefixes of responses with non-zero weight (a sampler's pairs touch a fraction)."""
    params, gradients = list(model.parameters()), []
    with torch.enable_grad():
        for weights in weight_sets:
            active = support(weights, vocab, length)
            dense = len(active[-1]) == vocab ** (length - 1)
            levels = level_logprobs(model, prompt, vocab, length, None if dense else active)
            per_level = level_weights(weights.to(levels[0]), vocab, length)
            if not dense:
                per_level = [w[rows] for w, rows in zip(per_level, active)]
            objective = sum((level * w).sum() for level, w in zip(levels, per_level))
            grads = torch.autograd.grad(objective, params, allow_unused=True)
            gradients.append(flat(list(grads), params).double())
    return gradients


class _Walk(nn.Module):
    """The tree walk of one prompt as a module call, so `torch.func` can swap the model's parameters."""

    def __init__(self, model: nn.Module, vocab: int, length: int) -> None:
        super().__init__()
        self.model, self.vocab, self.length = model, vocab, length

    def forward(self, prompt: Tensor) -> Tensor:
        return sum_levels(level_logprobs(self.model, prompt, self.vocab, self.length))


def directional_derivatives(model: nn.Module, prompts: Tensor, direction: Tensor, vocab: int, length: int) -> Tensor:
    """[N, V^T] the derivative of log pi(y|x) along `direction` (a flat vector over the model's
    parameters, normalised here to unit length) for every response of every prompt ([N, P]):
    forward-mode autodiff (a Jacobian-vector product) through the walk of an eager-attention copy
    (torch's CPU flash attention has no forward-mode derivative)."""
    walk = _Walk(copy.deepcopy(model).eval(), vocab, length)
    walk.model.set_attn_implementation("eager")
    names = [name for name, _ in walk.named_parameters()]
    values = [p.detach() for p in walk.parameters()]
    unit = direction / direction.norm()
    tangents, offset = [], 0
    for value in values:
        tangents.append(unit[offset : offset + value.numel()].view_as(value).to(value.dtype))
        offset += value.numel()

    def logprobs(prompt: Tensor):
        return lambda *params: torch.func.functional_call(walk, dict(zip(names, params)), (prompt,))

    with torch.no_grad():
        return torch.stack([torch.func.jvp(logprobs(x), tuple(values), tuple(tangents))[1] for x in prompts])
