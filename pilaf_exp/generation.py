"""Batched, KV-cached decoding from a per-row mixture of two causal LMs.

Every row of a decode batch draws its next token from
    logits = w_policy * h_policy + w_ref * h_ref          (then / temperature)
with the weights fixed by the row's *source*:
    policy    (1, 0)           y ~ pi_theta
    reference (0, 1)           y ~ pi_ref
    plus      (1 + c, -c)      PILAF's pi_plus  (token-level interpolation, c = coef)
    minus     (1 - c, +c)      PILAF's pi_minus
Each model keeps its own KV cache over just the rows whose weight for it is non-zero, so
the reference is never run on pure-policy rows and neither model ever re-reads a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache

SOURCES: tuple[str, ...] = ("policy", "reference", "plus", "minus")
POLICY, REFERENCE, PLUS, MINUS = range(len(SOURCES))


@dataclass(frozen=True)
class DecodeSpec:
    """How responses are decoded: shared by training-time sampling and evaluation."""

    max_new_tokens: int
    temperature: float = 1.0
    eos_token_id: int | None = None
    pad_token_id: int = 0


@dataclass
class Decoded:
    tokens: Tensor  # [R, T] sampled response tokens, pad after EOS
    mask: Tensor  # [R, T] 1 on real response tokens (EOS included), 0 after it
    logprobs: Tensor  # [R, T] log-prob of each token under the distribution it was drawn from
    positions: dict[str, int]  # token positions each model processed (prefill + decode)


def mixture_weights(sources: Tensor, coef: float) -> Tensor:
    """[R] source codes -> [R, 2] weights on (policy logits, reference logits)."""
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0 + coef, -coef], [1.0 - coef, coef]])
    return table[sources]


class _CachedRunner:
    """One model decoding a fixed subset of the batch rows with its own KV cache."""

    def __init__(self, model: nn.Module, rows: Tensor) -> None:
        self.model = model
        self.rows = rows  # [r] indices into the decode batch
        self.cache = DynamicCache()
        self.positions = 0

    def next_logits(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Feed this step's tokens ([R, s]) for our rows; return next-token logits [r, V]."""
        ids = input_ids[self.rows]
        out = self.model(
            input_ids=ids,
            attention_mask=attention_mask[self.rows],
            position_ids=position_ids[self.rows],
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.positions += ids.numel()
        return out.logits[:, -1].float()


def check_same_vocabulary(policy: nn.Module, reference: nn.Module) -> int:
    v_pol, v_ref = policy.config.vocab_size, reference.config.vocab_size
    if v_pol != v_ref:
        raise ValueError(
            f"policy vocabulary size {v_pol} != reference vocabulary size {v_ref}: "
            "logit interpolation needs one shared vocabulary"
        )
    return v_pol


@torch.no_grad()
def decode(
    policy: nn.Module,
    reference: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    sources: Tensor,
    spec: DecodeSpec,
    generator: torch.Generator,
    coef: float = 0.0,
) -> Decoded:
    """Sample one response per row. prompt_ids/prompt_mask: [R, P], left padded; sources: [R]."""
    vocab = check_same_vocabulary(policy, reference)
    weights = mixture_weights(sources, coef)  # [R, 2]
    runners = [
        _CachedRunner(model, torch.nonzero(weights[:, k] != 0).squeeze(-1))
        for k, model in enumerate((policy, reference))
    ]
    rows = prompt_ids.shape[0]
    attention = prompt_mask.long()
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    step_ids = prompt_ids
    finished = torch.zeros(rows, dtype=torch.bool)
    tokens, masks, logprobs = [], [], []
    for _ in range(spec.max_new_tokens):
        logits = torch.zeros(rows, vocab)
        for k, runner in enumerate(runners):
            if runner.rows.numel():
                h = runner.next_logits(step_ids, attention, position_ids)
                logits[runner.rows] += weights[runner.rows, k, None] * h
        logp = torch.log_softmax(logits / spec.temperature, dim=-1)  # [R, V]
        token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
        alive = ~finished
        token = torch.where(alive, token, spec.pad_token_id)
        tokens.append(token)
        masks.append(alive.long())
        logprobs.append(logp.gather(-1, token[:, None]).squeeze(-1) * alive)
        if spec.eos_token_id is not None:
            finished |= token == spec.eos_token_id
            if finished.all():
                break
        step_ids = token[:, None]
        attention = torch.cat([attention, torch.ones(rows, 1, dtype=torch.long)], dim=-1)
        position_ids = position_ids[:, -1:] + 1
    return Decoded(
        tokens=torch.stack(tokens, dim=1),
        mask=torch.stack(masks, dim=1),
        logprobs=torch.stack(logprobs, dim=1),
        positions={"policy": runners[0].positions, "reference": runners[1].positions},
    )
