"""An oracle the policy can represent: r*(x, y) = log pi_target(y|x) - log pi_ref(y|x), pi_target a model
of the policy's own class (the SFT reference with seeded noise on its weights).

Why: the embedded task's default oracle is a random sequence classifier; the tiny policy captures only a
small part of it, so pi* ∝ pi_ref exp(r*/beta) is out of training's reach at any beta (a run at beta 1
ends at a few percent of J* - J(pi_ref)). With this oracle, pi* ∝ pi_ref^(1 - 1/beta) pi_target^(1/beta):
at beta 1 it is pi_target itself, a policy the model can be, so "trained close to J*" - the regime the
paper's theorem is about - can be reached (docs/results/protocol_regimes.yaml).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
from torch import Tensor, nn


class PolicyRatioReward(nn.Module):
    """Scores like a sequence classifier (`RewardOracle` reads `.logits[:, 0]`): the response's log-prob
    under `target` minus under `reference`. Inputs are [prompt (left padded to `prompt_length`), response
    (right padded)], as `labelling.encoding.TokenPassthrough` joins them."""

    def __init__(self, target: nn.Module, reference: nn.Module, prompt_length: int, pad_token_id: int = 0) -> None:
        super().__init__()
        self.target, self.reference = target.eval(), reference.eval()
        self.prompt_length = prompt_length
        self.config = SimpleNamespace(pad_token_id=pad_token_id)  # read by build_oracle / RewardOracle

    def response_logprob(self, model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids) -> Tensor:
        """[B] sum of log p(token) over the response's real tokens."""
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        token_logp = logits[:, :-1].float().log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [B, S-1]
        in_response = torch.arange(1, input_ids.shape[1], device=input_ids.device) >= self.prompt_length  # [S-1]
        keep = in_response[None, :] & attention_mask[:, 1:].bool()
        return (token_logp * keep).sum(-1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None):
        args = (input_ids, attention_mask, position_ids)
        score = self.response_logprob(self.target, *args) - self.response_logprob(self.reference, *args)
        return SimpleNamespace(logits=score[:, None])


def perturbed_policy_reward(reference: nn.Module, prompt_length: int, noise: float, seed: int) -> PolicyRatioReward:
    """pi_target = `reference` with every weight tensor w moved by noise x std(w) x N(0, 1) (seeded)."""
    target = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in target.parameters():
            scale = parameter.float().std() if parameter.numel() > 1 else parameter.float().abs()
            step = torch.randn(parameter.shape, generator=generator) * noise * scale
            parameter.add_(step.to(parameter.dtype))
    frozen = copy.deepcopy(reference)
    for model in (target, frozen):
        model.requires_grad_(False)
    return PolicyRatioReward(target, frozen, prompt_length)
