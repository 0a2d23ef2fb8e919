"""How sharp a starting policy is (paper Fig. 4: the overfitted initial policy)."""

from __future__ import annotations

import torch
from torch import nn

from pilaf_exp.data.task import DemonstratingTask, KnowsItsDistribution
from pilaf_exp.models.logprobs import sequence_logprob
from pilaf_exp.sampling.decoding import POLICY, DecodeSpec, decode


@torch.no_grad()
def describe_policy(
    policy: nn.Module, task: DemonstratingTask, temperature: float, count: int = 1024, seed: int = 0
) -> dict[str, float]:
    """How sharp a starting policy is: its response entropy on test prompts, its NLL of held-out
    demonstrations and, where the task knows its own distribution, its KL from it (nats)."""
    generator = torch.Generator().manual_seed(seed)
    demos = task.demonstrations(count, generator, prompts=task.test.ids)
    prompts, responses = demos[:, : task.prompt_length], demos[:, task.prompt_length :]
    nll = -sequence_logprob(policy, prompts, torch.ones_like(prompts), responses, torch.ones_like(responses))
    out = decode(
        policy,
        policy,
        prompts,
        torch.ones_like(prompts),
        torch.full((count,), POLICY),
        DecodeSpec.of(task.response_format, temperature),
        generator,
    )
    stats = {"init/entropy": -out.logprobs.sum(-1).mean().item(), "init/test_nll": nll.mean().item()}
    if isinstance(task, KnowsItsDistribution):
        stats["init/kl_to_task"] = (task.true_logprob(demos) + nll).mean().item()
    return stats
