"""The proxy oracle (stand-in for the human): a scalar reward model r*(x, y).

It is asked only for a preference label on a pair (`labelling.annotate`); its scalar score is
used for evaluation alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from pilaf_exp.labelling.encoding import TokenPassthrough


class Oracle(Protocol):
    """Scores (prompt, response) pairs: r*(x, y), [B]. Prompts left padded, responses right padded."""

    def score(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor) -> Tensor: ...


class RewardOracle(nn.Module):
    """Wraps any sequence-classification model with a scalar head; scores are affinely
    calibrated (`shift`, `scale`) so that r* has a chosen mean and spread under pi_ref."""

    def __init__(self, model: nn.Module, pad_token_id: int, encoder: Callable | None = None) -> None:
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id
        # Maps policy-token (prompt, response) to the oracle's (input_ids, attention_mask, position_ids):
        # the tokens as they are when the vocabularies agree, else via text (labelling.encoding).
        self.encoder = encoder or TokenPassthrough()
        self.register_buffer("shift", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))

    def raw_score(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor) -> Tensor:
        input_ids, attention_mask, position_ids = self.encoder(prompt_ids, prompt_mask, response_ids, response_mask)
        # The classifier reads its score at the last non-pad token, so padding must carry its pad id.
        input_ids = torch.where(attention_mask.bool(), input_ids, self.pad_token_id)
        with torch.inference_mode():  # frozen: no autograd bookkeeping at all
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
            scores = out.logits[:, 0].float()
        return scores.clone()  # a normal tensor again, usable anywhere

    def score(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor) -> Tensor:
        """Calibrated r*(x, y): [B]."""
        raw = self.raw_score(prompt_ids, prompt_mask, response_ids, response_mask)
        return (raw - self.shift) * self.scale

    def calibrate(self, raw_scores: Tensor, target_std: float) -> None:
        """Centre r* and scale it to `target_std` over the given (pi_ref) sample of raw scores."""
        self.shift.fill_(raw_scores.mean())
        self.scale.fill_(target_std / raw_scores.std().clamp(min=1e-8))
