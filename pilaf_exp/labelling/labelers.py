"""Labelling rules: from the oracle's two scores to "y_a is preferred" ([B] bool). Chosen by `_target_`
(`oracle/labeler=bradley_terry|argmax`)."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class Labeler(Protocol):
    def __call__(self, score_a: Tensor, score_b: Tensor, generator: torch.Generator) -> Tensor: ...


class BradleyTerryLabeler:
    """Sampled label: P(y_a > y_b) = sigmoid(r*(y_a) - r*(y_b))."""

    def __call__(self, score_a: Tensor, score_b: Tensor, generator: torch.Generator) -> Tensor:
        p_a = torch.sigmoid(score_a - score_b)
        return torch.rand(p_a.shape, generator=generator, device=generator.device) < p_a


class ArgmaxLabeler:
    """Deterministic label: the higher-scored response wins (ties go to y_a)."""

    def __call__(self, score_a: Tensor, score_b: Tensor, generator: torch.Generator) -> Tensor:
        return score_a >= score_b
