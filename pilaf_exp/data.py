"""Prompt streams and the labelled preference pairs (saved as an Arrow dataset)."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from pilaf_exp.generation import SOURCES
from pilaf_exp.prompts import Prompts
from pilaf_exp.samplers import PairBatch
from pilaf_exp.text import strip_padding


def prompt_stream(
    prompts: Prompts,
    batch_size: int,
    batches: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    micro_batch_size: int | None = None,
    start_step: int = 0,
) -> DataLoader:
    """`batches` steps of train prompts, reshuffled each pass, fixed by `seed`.

    One seeded stream of `batches x world_size x batch_size` prompts is cut into steps; rank r
    takes the r-th `batch_size` slice of every step, so ranks see different prompts and the run's
    prompts do not depend on how it is split. Each step arrives in micro-batches when asked."""
    total = batch_size * world_size * batches
    sampler = RandomSampler(range(len(prompts)), num_samples=total, generator=torch.Generator().manual_seed(seed))
    # A resumed run starts at its checkpoint's step: the prompts it has not trained on yet.
    order = torch.tensor(list(sampler)).view(batches, world_size, batch_size)[start_step:, rank].flatten()
    dataset = TensorDataset(prompts.ids, prompts.mask)
    return DataLoader(dataset, batch_size=micro_batch_size or batch_size, sampler=order.tolist())


class PreferenceLog:
    """Every labelled pair of a run, in order: the prompt, both responses, their sources,
    both oracle scores and the label. Batches are kept as tensors and turned into rows only when
    read or saved, so logging a training step costs no per-row Python."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, dict[str, Tensor], Tensor]] = []

    def __len__(self) -> int:
        return sum(len(label) for _, _, label in self.batches)

    def add(self, step: int, pairs: PairBatch, a_preferred: Tensor) -> None:
        # On the CPU (a no-op there), so a long GPU run does not keep every response on the device.
        kept = {name: getattr(pairs, name).cpu() for name in self.FIELDS}
        self.batches.append((step, kept, a_preferred.cpu()))

    FIELDS = ("prompt_ids", "prompt_mask", "response_a", "mask_a", "response_b", "mask_b", "source_a", "source_b")

    @property
    def columns(self) -> dict[str, list]:
        cols: dict[str, list] = {
            name: [] for name in ("step", "prompt", "response_a", "response_b", "source_a", "source_b", "a_preferred")
        }
        for step, pairs, a_preferred in self.batches:
            cols["step"] += [step] * len(a_preferred)
            cols["prompt"] += strip_padding(pairs["prompt_ids"], pairs["prompt_mask"])
            cols["response_a"] += strip_padding(pairs["response_a"], pairs["mask_a"])
            cols["response_b"] += strip_padding(pairs["response_b"], pairs["mask_b"])
            cols["source_a"] += [SOURCES[s] for s in pairs["source_a"].tolist()]
            cols["source_b"] += [SOURCES[s] for s in pairs["source_b"].tolist()]
            cols["a_preferred"] += a_preferred.tolist()
        return cols

    def save(self, path: Path) -> None:
        datasets.Dataset.from_dict(self.columns).save_to_disk(str(path))


def preference_log(ledger) -> PreferenceLog:
    """The run's labelled pairs, in order, rebuilt from its ledger (pilaf_exp.ledger)."""
    log = PreferenceLog()
    for entry in ledger.entries():
        log.add(entry["step"], PairBatch(**entry["pairs"]), entry["a_preferred"])
    return log
