"""Evaluation on held-out prompts: reward, KL to the reference and J = reward - beta * KL, from
sampled responses, with the exact values added where the task can be enumerated (`exact.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.evaluation.exact import ExactEvaluation
from pilaf_exp.evaluation.schedule import EvalSchedule
from pilaf_exp.infra.names import EVAL_J, EVAL_J_STDERR, EVAL_KL, EVAL_REWARD
from pilaf_exp.infra.ranks import ONE_PROCESS, Ranks
from pilaf_exp.labelling.oracle import Oracle
from pilaf_exp.models.logprobs import sequence_logprob
from pilaf_exp.sampling.decoding import POLICY, DecodeSpec, decode
from pilaf_exp.sampling.sharding import idle_batches


@dataclass
class Evaluator:
    prompts: Prompts  # [N, P] test prompts
    spec: DecodeSpec  # eval.temperature (the training temperature by default)
    beta: float
    seed: int
    schedule: EvalSchedule  # when to evaluate, and when exactly
    batch_size: int = 512
    samples_per_prompt: int = 1
    exact: ExactEvaluation | None = None  # enumerable tasks only

    @torch.no_grad()
    def __call__(
        self, policy: nn.Module, reference: nn.Module, oracle: Oracle, step: int = 0, ranks: Ranks = ONE_PROCESS
    ) -> dict[str, float]:
        """Sampled mean reward, KL and J over the test prompts with their standard error, and the
        exact ones when the schedule says (NaN otherwise, so every evaluation row has the same
        columns). With several ranks each evaluates its share of the prompts and the totals are
        summed across ranks."""
        metrics = self.sampled(policy, reference, oracle, step, ranks)
        if self.exact is not None:
            # Step 0 of every run evaluates the initial policy, a copy of pi_ref: its exact values are the table's.
            due = self.schedule.exact_due(step)
            exact = self.exact(policy, ranks, is_reference=step == 0) if due else None
            metrics |= exact or dict.fromkeys(self.exact.KEYS, nan)
        return metrics

    def sampled(
        self, policy: nn.Module, reference: nn.Module, oracle: Oracle, step: int, ranks: Ranks = ONE_PROCESS
    ) -> dict[str, float]:
        device = next(policy.parameters()).device
        # Each evaluation draws its own noise (seed, step, rank): reproducible, and independent
        # between evaluations, so no one draw's luck is shared by a whole curve.
        generator = torch.Generator(device=device).manual_seed(self.seed + 7_919 * step + 1_000_003 * ranks.rank)
        shard = ranks.share(self.prompts)
        k = self.samples_per_prompt
        totals = torch.zeros(6, dtype=torch.double, device=device)
        starts = range(0, len(shard), self.batch_size)
        # Sharded models: a rank with fewer batches runs as many forwards (on a stand-in, not counted).
        idle = idle_batches(len(starts), policy, reference)
        for start in starts:
            batch = shard[start : start + self.batch_size]
            totals += self.batch_sums(policy, reference, oracle, batch, generator)
        for _ in range(idle):
            self.batch_sums(policy, reference, oracle, self.prompts[:1], generator)
        n, reward_sum, kl_sum, j_sum, j_squares, within = ranks.sum(totals).tolist()
        # Evaluation noise on these fixed prompts: the within-prompt variance of J; with one sample per
        # prompt it cannot be told apart from the spread between prompts, which then stands in for it.
        variance = within / max(n - n / k, 1) if k > 1 else max(j_squares - j_sum * j_sum / n, 0.0) / max(n - 1, 1)
        return {
            EVAL_REWARD: reward_sum / n,
            EVAL_KL: kl_sum / n,
            EVAL_J: j_sum / n,
            EVAL_J_STDERR: (variance / n) ** 0.5,
        }

    def batch_sums(self, policy: nn.Module, reference: nn.Module, oracle: Oracle, batch: Prompts, generator) -> Tensor:
        """[6] `response_sums` of one batch of prompts, `samples_per_prompt` responses each."""
        device, k = generator.device, self.samples_per_prompt
        prompts, masks = batch.ids.repeat_interleave(k, 0).to(device), batch.mask.repeat_interleave(k, 0).to(device)
        sources = torch.full((len(prompts),), POLICY, device=device)
        out = decode(policy, reference, prompts, masks, sources, self.spec, generator)
        # The decoder's log-probs are exactly log pi_theta(y|x) at this temperature.
        logp_reference = sequence_logprob(reference, prompts, masks, out.tokens, out.mask, self.spec.temperature)
        reward = oracle.score(prompts, masks, out.tokens, out.mask).double()
        kl = (out.logprobs.sum(-1) - logp_reference).double()
        return response_sums(reward.view(-1, k), kl.view(-1, k), self.beta)


nan = float("nan")


def response_sums(reward: Tensor, kl: Tensor, beta: float) -> Tensor:
    """[6] sums over [prompts, k] responses, what ranks and batches add up: count, reward, KL, J,
    J^2, and J's squared deviations from its own prompt's mean."""
    j = reward - beta * kl
    count = torch.tensor(float(j.numel()), dtype=torch.double, device=j.device)
    within = (j - j.mean(1, keepdim=True)).square().sum()
    return torch.stack([count, reward.sum(), kl.sum(), j.sum(), j.square().sum(), within])
