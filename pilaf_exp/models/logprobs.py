"""Log-probabilities of responses under a causal LM, and the DPO implicit reward built from them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pilaf_exp.data.text import join


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
