"""This process's place in a distributed run: which share of a list is its own, and how a tensor
is summed over every process. One object, so what evaluates and counts takes one argument."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from torch import Tensor

T = TypeVar("T", bound=Sequence)


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


ONE_PROCESS = Ranks()
