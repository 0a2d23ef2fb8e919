"""Decoding from sharded models (FSDP): which models are sharded, and ranks kept in lock-step.

Under FSDP every forward of a sharded model is a collective (each unit all-gathers its weights), so
every rank must make the same forward calls in the same order: as many decode chunks, the same
models in each, as many steps in each, as many evaluation batches. `Lockstep` agrees on these
counts with one small all-reduce each. Without sharded models (one process, DDP) none is made and
nothing changes: a rank then stops as soon as its own rows are done, as before.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(m, FullyShardedDataParallel) for m in model.modules())


def unwrapped(model: nn.Module) -> nn.Module:
    """The model an FSDP unit wraps (its forward's signature, its class), else the model itself."""
    return model.module if isinstance(model, FullyShardedDataParallel) else model


class Lockstep:
    """Max-reductions over the ranks of the default process group (gloo on CPU, NCCL on GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @staticmethod
    def of(*models: nn.Module) -> Lockstep | None:
        """A Lockstep when any of `models` is sharded over several ranks, else None."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return None
        if not any(is_sharded(m) for m in models):
            return None
        return Lockstep(next(models[0].parameters()).device)

    def max(self, values: list[int]) -> list[int]:
        """Element-wise maximum of `values` over the ranks."""
        tensor = torch.tensor(values, dtype=torch.long, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """Whether `flag` holds on any rank."""
        return bool(self.max([int(flag)])[0])


def idle_batches(local: int, *models: nn.Module) -> int:
    """Batches this rank runs with nothing to keep so that it makes as many forward calls as the
    rank with the most batches (0 without sharded models)."""
    sync = Lockstep.of(*models)
    return sync.max([local])[0] - local if sync else 0
