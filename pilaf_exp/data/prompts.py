"""A set of tokenised prompts: ids and attention mask, left padded to one width."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Prompts:
    ids: Tensor  # [N, P] token ids, left padded
    mask: Tensor  # [N, P] 1 on real tokens, 0 on padding

    @classmethod
    def unpadded(cls, ids: Tensor) -> Prompts:
        return cls(ids, torch.ones_like(ids))

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, index) -> Prompts:
        return Prompts(self.ids[index], self.mask[index])
