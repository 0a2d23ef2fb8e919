"""The DPO loss (pure): a function of the four sequence log-probs of a labelled pair."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pilaf_exp.models.logprobs import implicit_reward


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
