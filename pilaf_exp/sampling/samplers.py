"""Response-pair samplers for preference labelling: one small class each, chosen by `_target_`.

Each returns, per prompt, one pair (y_a, y_b), the source that produced each response
(codes into `decoding.SOURCES`) and the token positions the models processed, so the
sampling cost is measured rather than assumed. A sampler is named by its config file
(`conf/sampler/<name>.yaml`): adding one is its class here (or anywhere) and that file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import torch
from torch import Tensor, nn

from pilaf_exp.models.logprobs import implicit_reward, sequence_logprob
from pilaf_exp.sampling.decoding import MINUS, PLUS, POLICY, REFERENCE, Decoded, DecodeSpec, decode
from pilaf_exp.sampling.pairs import PairBatch


def decode_passes(out: Decoded, spec: DecodeSpec) -> float:
    """Token positions both models processed, in full-response decodes (prefill + T - 1 steps)."""
    return sum(out.positions.values()) / (out.prompt_width + spec.max_new_tokens - 1)


class Sampler(Protocol):
    """One pair per prompt ([B, P] left padded), drawn with `generator` from the policy, the
    reference or a mixture of the two."""

    def sample(
        self,
        policy: nn.Module,
        reference: nn.Module,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        spec: DecodeSpec,
        generator: torch.Generator,
    ) -> PairBatch: ...


class TwoDrawSampler(ABC):
    """Samplers that draw exactly two responses per prompt, both in one decode batch."""

    coef: float = 0.0

    @abstractmethod
    def sources(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Source codes ([B], [B]) for y_a and y_b."""

    def sample(self, policy, reference, prompt_ids, prompt_mask, spec, generator) -> PairBatch:
        batch = prompt_ids.shape[0]
        source_a, source_b = self.sources(batch, generator)
        # Rows 0..B-1 are the y_a's, rows B..2B-1 the y_b's.
        out = decode(
            policy,
            reference,
            prompt_ids.repeat(2, 1),
            prompt_mask.repeat(2, 1),
            torch.cat([source_a, source_b]),
            spec,
            generator,
            coef=self.coef,
        )
        return PairBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_a=out.tokens[:batch],
            mask_a=out.mask[:batch],
            response_b=out.tokens[batch:],
            mask_b=out.mask[batch:],
            source_a=source_a,
            source_b=source_b,
            generation_passes=decode_passes(out, spec),
        )


class VanillaSampler(TwoDrawSampler):
    """y_a, y_b ~ pi_theta."""

    def sources(self, batch, generator):
        both = torch.full((batch,), POLICY, device=generator.device)
        return both, both.clone()


class HybridSampler(TwoDrawSampler):
    """XPO-style: y_a ~ pi_theta, y_b ~ pi_ref."""

    def sources(self, batch, generator):
        device = generator.device
        return torch.full((batch,), POLICY, device=device), torch.full((batch,), REFERENCE, device=device)


class PilafSampler(TwoDrawSampler):
    """With prob. 1 - interpolated_fraction a vanilla pair, else (y_a ~ pi_plus, y_b ~ pi_minus)."""

    def __init__(self, coef: float, interpolated_fraction: float = 0.5) -> None:
        self.coef = coef
        self.interpolated_fraction = interpolated_fraction

    def sources(self, batch, generator):
        interpolated = torch.rand(batch, generator=generator, device=generator.device) < self.interpolated_fraction
        source_a = torch.where(interpolated, PLUS, POLICY)
        source_b = torch.where(interpolated, MINUS, POLICY)
        return source_a, source_b


class BestOfNSampler:
    """N responses ~ pi_theta per prompt; keep the argmax and argmin of the DPO implicit reward."""

    def __init__(self, n: int = 8, beta: float = 0.1) -> None:
        self.n = n
        self.beta = beta

    def sample(self, policy, reference, prompt_ids, prompt_mask, spec, generator) -> PairBatch:
        batch, n = prompt_ids.shape[0], self.n
        # Row r*B + i is candidate r of prompt i.
        prompts = prompt_ids.repeat(n, 1)
        masks = prompt_mask.repeat(n, 1)
        sources = torch.full((n * batch,), POLICY, device=prompt_ids.device)
        out = decode(policy, reference, prompts, masks, sources, spec, generator)
        rewards, selection_passes = self.candidate_rewards(policy, reference, prompts, masks, out, spec)
        rewards = rewards.view(n, batch)
        best, worst = rewards.argmax(0), rewards.argmin(0)
        # Identical rewards would make argmax == argmin; fall back to the next candidate.
        worst = torch.where(best == worst, (best + 1) % n, worst)
        rows = torch.arange(batch, device=prompt_ids.device)
        pick = lambda t, idx: t.view(n, batch, -1)[idx, rows]  # noqa: E731
        return PairBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_a=pick(out.tokens, best),
            mask_a=pick(out.mask, best),
            response_b=pick(out.tokens, worst),
            mask_b=pick(out.mask, worst),
            source_a=sources[:batch],
            source_b=sources[batch : 2 * batch],
            generation_passes=decode_passes(out, spec),
            selection_passes=selection_passes,
        )

    @torch.no_grad()
    def candidate_rewards(self, policy, reference, prompts, masks, out: Decoded, spec: DecodeSpec):
        """r_theta of every candidate ([N*B]), at temperature 1 as DPO defines it, and the
        full-sequence forwards spent on it (one per candidate and model scored)."""
        logp_reference = sequence_logprob(reference, prompts, masks, out.tokens, out.mask)
        if spec.temperature == 1.0:
            # The decoder's log-probs are exactly log pi_theta(y|x): no policy forward needed.
            logp_policy, models_scored = out.logprobs.sum(-1), 1
        else:
            logp_policy, models_scored = sequence_logprob(policy, prompts, masks, out.tokens, out.mask), 2
        rewards = implicit_reward(logp_policy, logp_reference, self.beta)
        return rewards, float(models_scored * len(prompts))
