"""Evaluation on held-out prompts: reward, KL to the reference and J = reward - beta * KL."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pilaf_exp.dpo import sequence_logprob
from pilaf_exp.generation import POLICY, DecodeSpec, decode
from pilaf_exp.oracle import RewardOracle


@dataclass
class Evaluator:
    prompt_ids: Tensor  # [N, P] test prompts
    prompt_mask: Tensor  # [N, P]
    spec: DecodeSpec  # same temperature as training-time sampling
    beta: float
    seed: int
    batch_size: int = 512

    @torch.no_grad()
    def __call__(self, policy: nn.Module, reference: nn.Module, oracle: RewardOracle) -> dict[str, float]:
        # A fixed generator per call: every evaluation of every run sees the same sampling noise
        # stream, so differences between checkpoints are not evaluation luck.
        generator = torch.Generator().manual_seed(self.seed)
        rewards, kls = [], []
        for start in range(0, len(self.prompt_ids), self.batch_size):
            prompts = self.prompt_ids[start : start + self.batch_size]
            masks = self.prompt_mask[start : start + self.batch_size]
            out = decode(policy, reference, prompts, masks, torch.full((len(prompts),), POLICY), self.spec, generator)
            # The decoder's log-probs are exactly log pi_theta(y|x) at this temperature.
            logp_policy = out.logprobs.sum(-1)
            logp_reference = sequence_logprob(reference, prompts, masks, out.tokens, out.mask, self.spec.temperature)
            rewards.append(oracle.score(prompts, masks, out.tokens, out.mask))
            kls.append(logp_policy - logp_reference)
        reward, kl = torch.cat(rewards).mean().item(), torch.cat(kls).mean().item()
        return {"eval/reward": reward, "eval/kl": kl, "eval/J": reward - self.beta * kl}
