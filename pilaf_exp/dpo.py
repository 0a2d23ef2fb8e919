"""Pure functions of DPO: masked sequence log-probs, the DPO loss, the implicit reward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def join(prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor):
    """Left-padded prompt [B, P] + right-padded response [B, T] -> model inputs [B, P+T].

    Position ids count only real tokens, so a left-padded row sees the same positions as
    an unpadded one.
    """
    input_ids = torch.cat([prompt_ids, response_ids], dim=-1)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=-1).long()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


def response_token_logprobs(
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    response_ids: Tensor,
    response_mask: Tensor,
    temperature: float = 1.0,
) -> Tensor:
    """log pi(y_t | x, y_<t) for every response token, 0 on padding: [B, T]."""
    input_ids, attention_mask, position_ids = join(prompt_ids, prompt_mask, response_ids, response_mask)
    steps = response_ids.shape[1]
    # Logits at positions P-1 .. P+T-2 predict the T response tokens; skip the rest.
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=steps + 1,
    ).logits[:, :-1]
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, response_ids[..., None]).squeeze(-1) * response_mask


def sequence_logprob(model: nn.Module, prompt_ids, prompt_mask, response_ids, response_mask, temperature=1.0) -> Tensor:
    """log pi(y | x) summed over response tokens only: [B]."""
    return response_token_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature).sum(-1)


def implicit_reward(policy_logp: Tensor, reference_logp: Tensor, beta: float) -> Tensor:
    """DPO implicit reward r_theta(x, y) = beta * (log pi_theta(y|x) - log pi_ref(y|x))."""
    return beta * (policy_logp - reference_logp)


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """Mean DPO loss over the batch, and the per-pair implicit reward margins [B]."""
    margin = implicit_reward(policy_chosen, reference_chosen, beta) - implicit_reward(
        policy_rejected, reference_rejected, beta
    )
    return -F.logsigmoid(margin).mean(), margin
