"""Token sequences: padding, joining a prompt to its response, and tokenising text."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, str]]


def join(prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor):
    """Left-padded prompt [B, P] + right-padded response [B, T] -> model inputs [B, P+T].

    Position ids count only real tokens, so a left-padded row sees the same positions as
    an unpadded one.
    """
    input_ids = torch.cat([prompt_ids, response_ids], dim=-1)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=-1).long()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


def strip_padding(ids: Tensor, mask: Tensor) -> list[list[int]]:
    """Each row's tokens where its mask is 1 (two tensor-to-list conversions, no per-row tensor ops)."""
    return [[t for t, m in zip(row, keep) if m] for row, keep in zip(ids.tolist(), mask.tolist())]


def encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str], special: bool) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=special)["input_ids"]


def pad_left(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
    return ids, mask


def pad_right(rows: list[list[int]], pad: int, width: int | None = None) -> tuple[Tensor, Tensor]:
    width = width or max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
