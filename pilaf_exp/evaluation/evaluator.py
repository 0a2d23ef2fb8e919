"""Evaluation on held-out prompts: reward, KL to the reference and J = reward - beta * KL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.labelling.oracle import RewardOracle
from pilaf_exp.models.logprobs import sequence_logprob
from pilaf_exp.sampling.decoding import POLICY, DecodeSpec, decode

Reduce = Callable[[Tensor], Tensor]  # sums a tensor over the ranks of a distributed run


@dataclass
class Evaluator:
    prompts: Prompts  # [N, P] test prompts
    spec: DecodeSpec  # same temperature as training-time sampling
    beta: float
    seed: int
    batch_size: int = 512

    @torch.no_grad()
    def __call__(
        self, policy: nn.Module, reference: nn.Module, oracle: RewardOracle, rank: int = 0, world_size: int = 1,
        reduce: Reduce | None = None,
    ) -> dict[str, float]:  # fmt: skip
        """Mean reward, KL and J over the test prompts. With several ranks each evaluates its
        share (rows rank, rank + world_size, ...) and `reduce` sums the totals across ranks."""
        device = next(policy.parameters()).device
        # A fixed generator per call: every evaluation of every run sees the same sampling noise
        # stream, so differences between checkpoints are not evaluation luck.
        generator = torch.Generator(device=device).manual_seed(self.seed + rank)
        shard = self.prompts[rank::world_size]
        rewards, kls = [], []
        for start in range(0, len(shard), self.batch_size):
            batch = shard[start : start + self.batch_size]
            prompts, masks = batch.ids.to(device), batch.mask.to(device)
            sources = torch.full((len(prompts),), POLICY, device=device)
            out = decode(policy, reference, prompts, masks, sources, self.spec, generator)
            # The decoder's log-probs are exactly log pi_theta(y|x) at this temperature.
            logp_policy = out.logprobs.sum(-1)
            logp_reference = sequence_logprob(reference, prompts, masks, out.tokens, out.mask, self.spec.temperature)
            rewards.append(oracle.score(prompts, masks, out.tokens, out.mask))
            kls.append(logp_policy - logp_reference)
        reward, kl = torch.cat(rewards).double(), torch.cat(kls).double()
        per_response_j = reward - self.beta * kl  # [n]; its spread gives J's sampling error
        # Sums (count, reward, KL, J, J^2) reduce across ranks; the means follow from them.
        totals = torch.stack([torch.tensor(len(kl), dtype=torch.double, device=kl.device), reward.sum(), kl.sum(),
                              per_response_j.sum(), per_response_j.square().sum()])  # fmt: skip
        if reduce is not None:
            totals = reduce(totals)
        n, reward_sum, kl_sum, j_sum, j_sq = totals.tolist()
        j_var = max(j_sq - j_sum * j_sum / n, 0.0) / max(n - 1, 1)
        return {
            "eval/reward": reward_sum / n,
            "eval/kl": kl_sum / n,
            "eval/J": j_sum / n,
            "eval/J_stderr": (j_var / n) ** 0.5,
        }
