"""The one pair type: per prompt, two responses, where each came from and what they cost.

Samplers return it with (y_a, y_b) in sampling order; once labelled, `preferred_first` puts the
oracle's choice in the `a` slot, and DPO reads (a, b) as (chosen, rejected). The same type is
written to the annotation ledger, the preference log and iterative DPO's round datasets.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor


@dataclass
class PairBatch:
    prompt_ids: Tensor  # [B, P] left padded
    prompt_mask: Tensor  # [B, P]
    response_a: Tensor  # [B, T] right padded
    mask_a: Tensor  # [B, T]
    response_b: Tensor  # [B, T]
    mask_b: Tensor  # [B, T]
    source_a: Tensor  # [B] source codes (sampling.decoding.SOURCES)
    source_b: Tensor  # [B]
    # Model forward passes, in units of "one model decodes one full response": measured as
    # token positions processed / (prompt width + new tokens - 1), summed over both models.
    generation_passes: float = 0.0
    selection_passes: float = 0.0  # extra full-sequence forwards spent choosing the pair (best-of-N)

    TENSORS: ClassVar[tuple[str, ...]] = (
        "prompt_ids",
        "prompt_mask",
        "response_a",
        "mask_a",
        "response_b",
        "mask_b",
        "source_a",
        "source_b",
    )

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def tensors(self) -> tuple[Tensor, ...]:
        return tuple(getattr(self, name) for name in self.TENSORS)

    @classmethod
    def from_tensors(cls, *tensors: Tensor) -> PairBatch:
        return cls(**dict(zip(cls.TENSORS, tensors)))

    def to(self, device: str | torch.device) -> PairBatch:
        return replace(self, **{name: getattr(self, name).to(device) for name in self.TENSORS})

    @classmethod
    def concat(cls, parts: list[PairBatch]) -> PairBatch:
        """One batch of all parts' pairs, their costs summed."""
        tensors = (torch.cat(column) for column in zip(*(p.tensors() for p in parts)))
        batch = cls.from_tensors(*tensors)
        batch.generation_passes = sum(p.generation_passes for p in parts)
        batch.selection_passes = sum(p.selection_passes for p in parts)
        return batch

    def preferred_first(self, a_preferred: Tensor) -> PairBatch:
        """The same pairs with the preferred response in the `a` slot ([B] bool: a was preferred)."""
        keep = a_preferred[:, None]
        swap = lambda a, b, k: (torch.where(k, a, b), torch.where(k, b, a))  # noqa: E731
        response_a, response_b = swap(self.response_a, self.response_b, keep)
        mask_a, mask_b = swap(self.mask_a, self.mask_b, keep)
        source_a, source_b = swap(self.source_a, self.source_b, a_preferred)
        return replace(
            self,
            response_a=response_a,
            mask_a=mask_a,
            response_b=response_b,
            mask_b=mask_b,
            source_a=source_a,
            source_b=source_b,
        )
