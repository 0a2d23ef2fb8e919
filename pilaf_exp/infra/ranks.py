"""This process's place in a distributed run: which share of a list is its own, and how a tensor
is summed over every process. One object, so what evaluates and counts takes one argument."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch.distributed as dist
from torch import Tensor

T = TypeVar("T", bound=Sequence)

# Rank r's sampling and labelling noise is seeded `seed + RANK_SEED_STRIDE * r`: rank 0's is the
# single-process run's, and no two ranks' streams start from one seed.
RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    reduce: Callable[[Tensor], Tensor] | None = None  # sums a tensor over the ranks; None: one process

    def share(self, items: T) -> T:
        """This rank's share of `items`: rows rank, rank + world_size, ... (every row on one rank)."""
        return items[self.rank :: self.world_size]

    def sum(self, tensor: Tensor) -> Tensor:
        """`tensor` summed over the ranks (itself on one process)."""
        return tensor if self.reduce is None else self.reduce(tensor)

    def own(self, path: Path) -> Path:
        """Where this rank writes what each rank makes for itself: `path` on one process, else
        `path/rank_<r>`."""
        return path if self.world_size == 1 else path / f"rank_{self.rank}"


ONE_PROCESS = Ranks()


def planned_processes(devices: object, num_nodes: object = 1) -> int:
    """The ranks a trainer with Lightning's `devices` and `num_nodes` will run: devices x nodes for a
    count or a device list; 0 when the config leaves it to the machine ("auto", "-1")."""
    count = len(devices) if isinstance(devices, Sequence) and not isinstance(devices, str) else devices
    if isinstance(count, int) and count > 0 and isinstance(num_nodes, int):
        return count * num_nodes
    return 0


def gather_over_ranks(value: object) -> list[object]:
    """`value` from every process of the default process group, by rank ([value] without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
