"""Every labelled pair of a run, saved as an Arrow dataset (`datasets.load_from_disk`)."""

from __future__ import annotations

from pathlib import Path

import datasets
from torch import Tensor

from pilaf_exp.data.text import strip_padding
from pilaf_exp.infra.ledger import Ledger
from pilaf_exp.sampling.decoding import SOURCES
from pilaf_exp.sampling.pairs import PairBatch


class PreferenceLog:
    """The prompt, both responses, their sources, and the label of every pair, in order. Batches
    are kept as tensors and turned into rows only when read or saved, so logging a training step
    costs no per-row Python."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, dict[str, Tensor], Tensor]] = []

    def __len__(self) -> int:
        return sum(len(label) for _, _, label in self.batches)

    def add(self, step: int, pairs: PairBatch, a_preferred: Tensor) -> None:
        # On the CPU (a no-op there), so a long GPU run does not keep every response on the device.
        kept = {name: getattr(pairs, name).cpu() for name in PairBatch.TENSORS}
        self.batches.append((step, kept, a_preferred.cpu()))

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

    @classmethod
    def from_ledger(cls, ledger: Ledger) -> PreferenceLog:
        """A run's labelled pairs, in order, rebuilt from its annotation ledger."""
        log = cls()
        for entry in ledger.entries():
            log.add(entry["step"], PairBatch(**entry["pairs"]), entry["a_preferred"])
        return log
