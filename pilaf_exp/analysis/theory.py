"""T-PILAF, the paper's theoretical sampler, drawn exactly: with probability `interpolated_fraction` a
pair (y_a ~ pi_plus, y_b ~ pi_minus) with the *sequence-level* interpolations

    pi_plus(y|x) ∝ pi(y|x)^(1+c) pi_ref(y|x)^(-c),    pi_minus(y|x) ∝ pi(y|x)^(1-c) pi_ref(y|x)^c,

(pi exp(+-r_theta / beta * c) with r_theta the DPO implicit reward; c = beta in the paper), else a vanilla
pair. `PilafSampler` interpolates per token instead, which is what training uses; this one is for the
gradient analysis only (it enumerates every response of a prompt on each call, so it is not in
conf/sampler/). The paper mixes half interpolated and half vanilla pairs; the theorem's first-order
cancellation needs the share Z+ Z- / (1 + Z+ Z-) (`theorem_share`, interpolated_fraction=None).
Select it as a variant of pilaf:

    --variant t_pilaf=pilaf:sampler._target_=pilaf_exp.analysis.theory.SequencePilafSampler
    --variant t_pilaf_exact=pilaf:sampler._target_=...SequencePilafSampler:sampler.interpolated_fraction=null
"""

from __future__ import annotations

import torch
from torch import Tensor

from pilaf_exp.evaluation.exact import all_sequences, response_logprobs
from pilaf_exp.sampling.decoding import MINUS, PLUS, POLICY
from pilaf_exp.sampling.pairs import PairBatch


def interpolated_logprobs(logp: Tensor, reference_logp: Tensor, coef: float) -> tuple[Tensor, Tensor]:
    """[V^T] log pi_plus and log pi_minus, normalised over every response (float64)."""
    logp, reference_logp = logp.double(), reference_logp.double()
    plus = (1 + coef) * logp - coef * reference_logp
    minus = (1 - coef) * logp + coef * reference_logp
    return plus - plus.logsumexp(0), minus - minus.logsumexp(0)


def partition_product(logp: Tensor, reference_logp: Tensor, coef: float) -> float:
    """Z+ Z- = sum pi^(1+c) pi_ref^(-c) x sum pi^(1-c) pi_ref^c: the normalisers of pi+ and pi-."""
    logp, reference_logp = logp.double(), reference_logp.double()
    plus = ((1 + coef) * logp - coef * reference_logp).logsumexp(0)
    minus = ((1 - coef) * logp + coef * reference_logp).logsumexp(0)
    return float((plus + minus).exp())


def theorem_share(logp: Tensor, reference_logp: Tensor, coef: float) -> float:
    """The share of interpolated pairs at which the theorem's first-order cancellation is exact:
    Z+ Z- / (1 + Z+ Z-) (a mixture weight times sigma'(margin) that no longer depends on the pair)."""
    product = partition_product(logp, reference_logp, coef)
    return product / (1.0 + product)


class SequencePilafSampler:
    """T-PILAF by enumeration; responses of the task's fixed length, unpadded prompts.
    `interpolated_fraction`: the share of interpolated pairs (the paper's 1/2), or None for the theorem's
    share per prompt (`theorem_share`)."""

    def __init__(self, coef: float, interpolated_fraction: float | None = 0.5) -> None:
        self.coef = coef
        self.interpolated_fraction = interpolated_fraction

    def sample(self, policy, reference, prompt_ids, prompt_mask, spec, generator) -> PairBatch:
        if not bool(prompt_mask.all()):
            raise ValueError("SequencePilafSampler takes unpadded prompts of one length")
        vocab, length = policy.config.vocab_size, spec.max_new_tokens
        responses = all_sequences(vocab, length)
        rows = len(prompt_ids)
        index_a, index_b = torch.empty(rows, dtype=torch.long), torch.empty(rows, dtype=torch.long)
        uniform = torch.rand(rows, generator=generator)  # [rows] below the share: an interpolated pair
        interpolated = torch.zeros(rows, dtype=torch.bool)
        prompts, inverse = torch.unique(prompt_ids.cpu(), dim=0, return_inverse=True)
        for k, prompt in enumerate(prompts):
            mine = (inverse == k).nonzero().squeeze(-1)
            logp = response_logprobs(policy, prompt.to(prompt_ids.device), vocab, length).cpu()
            reference_logp = response_logprobs(reference, prompt, vocab, length).cpu()
            share = self.interpolated_fraction
            interpolated[mine] = uniform[mine] < (
                share if share is not None else theorem_share(logp, reference_logp, self.coef)
            )
            plus, minus = interpolated_logprobs(logp, reference_logp, self.coef)
            draw = lambda lp: torch.multinomial(lp.exp(), len(mine), replacement=True, generator=generator)  # noqa: E731
            index_a[mine] = torch.where(interpolated[mine], draw(plus), draw(logp.double()))
            index_b[mine] = torch.where(interpolated[mine], draw(minus), draw(logp.double()))
        a, b = responses[index_a].to(prompt_ids.device), responses[index_b].to(prompt_ids.device)
        return PairBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_a=a,
            mask_a=torch.ones_like(a),
            response_b=b,
            mask_b=torch.ones_like(b),
            source_a=torch.where(interpolated, PLUS, POLICY),
            source_b=torch.where(interpolated, MINUS, POLICY),
        )
