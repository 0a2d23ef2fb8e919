"""Prompt streams and the labelled preference pairs (saved as an Arrow dataset)."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from pilaf_exp.generation import SOURCES
from pilaf_exp.samplers import PairBatch


def prompt_stream(prompt_ids: Tensor, prompt_mask: Tensor, batch_size: int, batches: int, seed: int) -> DataLoader:
    """`batches` batches of train prompts, reshuffled each pass, fixed by `seed`."""
    sampler = RandomSampler(
        range(len(prompt_ids)), num_samples=batch_size * batches, generator=torch.Generator().manual_seed(seed)
    )
    return DataLoader(TensorDataset(prompt_ids, prompt_mask), batch_size=batch_size, sampler=sampler)


def _strip(tokens: Tensor, mask: Tensor) -> list[list[int]]:
    """Drop padding: [B, L] -> B lists of real token ids."""
    return [row[m.bool()].tolist() for row, m in zip(tokens, mask)]


class PreferenceLog:
    """Every labelled pair of a run, in order: the prompt, both responses, their sources,
    both oracle scores and the label."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {
            name: [] for name in ("step", "prompt", "response_a", "response_b", "source_a", "source_b", "a_preferred")
        }

    def __len__(self) -> int:
        return len(self.columns["step"])

    def add(self, step: int, pairs: PairBatch, a_preferred: Tensor) -> None:
        cols = self.columns
        cols["step"] += [step] * len(pairs)
        cols["prompt"] += _strip(pairs.prompt_ids, pairs.prompt_mask)
        cols["response_a"] += _strip(pairs.response_a, pairs.mask_a)
        cols["response_b"] += _strip(pairs.response_b, pairs.mask_b)
        cols["source_a"] += [SOURCES[s] for s in pairs.source_a.tolist()]
        cols["source_b"] += [SOURCES[s] for s in pairs.source_b.tolist()]
        cols["a_preferred"] += a_preferred.tolist()

    def save(self, path: Path) -> None:
        datasets.Dataset.from_dict(self.columns).save_to_disk(str(path))
