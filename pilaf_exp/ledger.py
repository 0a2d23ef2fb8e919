"""The annotation ledger: every labelled pair, stored durably before the gradient step that uses it.

One file per (step, micro-batch) and rank (online DPO), or per (round, sampling batch) (iterative
DPO), holds the pairs, their labels, what they cost and the
sampling generator's state right after they were drawn. A resumed run replays the steps after
its checkpoint from these files instead of sampling and querying the oracle again, so no pair is
lost, re-queried or counted twice, and the run continues bit for bit as if never stopped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from pilaf_exp.durable import write_atomic
from pilaf_exp.samplers import PairBatch


class Ledger:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, step: int, micro: int) -> Path:
        return self.directory / f"step_{step:08d}_{micro:04d}.pt"

    def read(self, step: int, micro: int) -> dict[str, Any] | None:
        """The entry of (step, micro-batch), or None if it was never written in full."""
        path = self.path(step, micro)
        return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None

    def write(self, step: int, micro: int, entry: dict[str, Any]) -> None:
        write_atomic(self.path(step, micro), lambda f: torch.save(entry, f))

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, in step order."""
        return [torch.load(p, map_location="cpu", weights_only=False) for p in sorted(self.directory.glob("step_*.pt"))]


def ledger_entry(step: int, pairs: PairBatch, a_preferred: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
    """One micro-batch's pairs (on the CPU), labels and the generator state after drawing them."""
    fields = {f.name: getattr(pairs, f.name) for f in dataclasses.fields(pairs)}
    return {
        "step": step,
        "pairs": {k: v.cpu() if torch.is_tensor(v) else v for k, v in fields.items()},
        "a_preferred": a_preferred.cpu(),
        "generator": generator.get_state(),
    }
