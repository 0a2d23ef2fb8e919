"""What one run accumulates across its trainers (iterative DPO has one per round), and what an
algorithm hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pilaf_exp.infra.names import ANNOTATIONS, FORWARD_PASSES, SELECTION_PASSES
from pilaf_exp.infra.ranks import ONE_PROCESS, Ranks
from pilaf_exp.labelling.preference_log import PreferenceLog
from pilaf_exp.sampling.pairs import PairBatch


@dataclass
class RunRecord:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    preferences: PreferenceLog = field(default_factory=PreferenceLog)
    pairs_labelled: int = 0
    generation_passes: float = 0.0
    selection_passes: float = 0.0
    step_offset: int = 0  # training steps taken by earlier trainers of this run
    notes: dict[str, Any] = field(default_factory=dict)  # provenance that goes into the summary
    run_info: dict[str, Any] = field(default_factory=dict)  # how this process ran (timing.json, not the summary)
    rank: int = 0  # this process's rank in a distributed run
    world_size: int = 1

    STATE: ClassVar[tuple[str, ...]] = (
        "history",
        "pairs_labelled",
        "generation_passes",
        "selection_passes",
        "step_offset",
    )

    @property
    def annotations(self) -> int:
        """Responses shown to the oracle: 2 per labelled pair (the paper's annotation cost)."""
        return 2 * self.pairs_labelled

    def flush_preferences(self, path: Path, log: PreferenceLog | None = None) -> None:
        """Save the pairs labelled since the last flush (or `log`, e.g. the whole run's pairs read
        back from the ledger) as an Arrow dataset, and start afresh."""
        (self.preferences if log is None else log).save(path)
        self.preferences = PreferenceLog()

    def state(self) -> dict[str, Any]:
        """What a checkpoint or a cached stage keeps of the record (not the pair log)."""
        return {k: getattr(self, k) for k in self.STATE}

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back what `state` kept (a checkpoint's record)."""
        for key, value in state.items():
            setattr(self, key, value)

    def add(self, step: int, pairs: PairBatch, a_preferred: Tensor) -> PairBatch:
        """Count and log one batch of labelled pairs; return them preferred-first (chosen, rejected)."""
        self.preferences.add(step, pairs, a_preferred)
        self.pairs_labelled += len(pairs)
        self.generation_passes += pairs.generation_passes
        self.selection_passes += pairs.selection_passes
        return pairs.preferred_first(a_preferred)

    def preferences_name(self) -> str:
        """Where the labelled pairs go in the run directory: one dataset per rank when several."""
        return "preferences" if self.world_size == 1 else f"preferences/rank_{self.rank}"

    def recount(self, entries: list[dict[str, Any]]) -> None:
        """Pair and pass counts from ledger entries (infra.ledger): this rank's own account."""
        self.pairs_labelled = sum(len(e["a_preferred"]) for e in entries)
        self.generation_passes = sum(e["pairs"]["generation_passes"] for e in entries)
        self.selection_passes = sum(e["pairs"]["selection_passes"] for e in entries)

    def cost_metrics(self, ranks: Ranks = ONE_PROCESS) -> dict[str, float]:
        """Annotations and passes per pair of the whole run (summed over the ranks)."""
        totals = torch.tensor([self.pairs_labelled, self.generation_passes, self.selection_passes], dtype=torch.double)
        pairs, generation, selection = ranks.sum(totals).tolist()
        return {
            ANNOTATIONS: 2.0 * pairs,
            FORWARD_PASSES: generation / max(pairs, 1),
            SELECTION_PASSES: selection / max(pairs, 1),
        }


@dataclass
class Fitted:
    """What an algorithm hands back: the trained policy and the run's record."""

    policy: nn.Module
    record: RunRecord
