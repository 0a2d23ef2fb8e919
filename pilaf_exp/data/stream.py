"""The training prompts a run sees, in order: one seeded stream, cut into steps and ranks."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from pilaf_exp.data.prompts import Prompts


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


class PromptStream(L.LightningDataModule):
    """Online DPO's prompts as a Lightning data module: the stream is cut for this process's rank
    once the trainer knows the ranks, and starts at `start_step` when a run resumes."""

    def __init__(
        self,
        prompts: Prompts,
        batch_size: int,
        steps: int,
        seed: int,
        micro_batch_size: int | None = None,
        start_step: int = 0,
    ) -> None:
        super().__init__()
        self.prompts, self.batch_size, self.steps, self.seed = prompts, batch_size, steps, seed
        self.micro_batch_size, self.start_step = micro_batch_size, start_step

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self.trainer.global_rank, self.trainer.world_size
        return prompt_stream(
            self.prompts,
            self.batch_size,
            self.steps,
            self.seed,
            rank,
            world_size,
            self.micro_batch_size,
            self.start_step,
        )
