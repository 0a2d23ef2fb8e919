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
        reward, kl = torch.cat(rewards), torch.cat(kls)
        per_response_j = reward - self.beta * kl  # [N]; its spread gives J's sampling error
        return {
            "eval/reward": reward.mean().item(),
            "eval/kl": kl.mean().item(),
            "eval/J": per_response_j.mean().item(),
            "eval/J_stderr": (per_response_j.std() / len(per_response_j) ** 0.5).item(),
        }


@torch.no_grad()
def describe_policy(policy: nn.Module, task, temperature: float, count: int = 1024, seed: int = 0) -> dict[str, float]:
    """How sharp a starting policy is: its response entropy on test prompts, its NLL of held-out
    demonstrations and, where the task knows its own distribution, its KL from it (nats)."""
    generator = torch.Generator().manual_seed(seed)
    demos = task.demonstrations(count, generator, prompts=task.test_prompts)
    prompts, responses = demos[:, : task.prompt_length], demos[:, task.prompt_length :]
    nll = -sequence_logprob(policy, prompts, torch.ones_like(prompts), responses, torch.ones_like(responses))
    out = decode(policy, policy, prompts, torch.ones_like(prompts), torch.full((count,), POLICY),
                 task.decode_spec(temperature), generator)  # fmt: skip
    stats = {"init/entropy": -out.logprobs.sum(-1).mean().item(), "init/test_nll": nll.mean().item()}
    if hasattr(task, "true_logprob"):
        stats["init/kl_to_task"] = (task.true_logprob(demos) + nll).mean().item()
    return stats
