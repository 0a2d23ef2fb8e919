"""From sampled pairs to labelled (chosen, rejected) pairs, and the record a run keeps of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pilaf_exp.data import PreferenceLog
from pilaf_exp.ledger import Ledger, ledger_entry
from pilaf_exp.oracle import RewardOracle
from pilaf_exp.samplers import PairBatch
from pilaf_exp.timing import Stopwatch


@dataclass
class LabelledPairs:
    prompt_ids: Tensor  # [B, P]
    prompt_mask: Tensor  # [B, P]
    chosen: Tensor  # [B, T]
    chosen_mask: Tensor  # [B, T]
    rejected: Tensor  # [B, T]
    rejected_mask: Tensor  # [B, T]

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.prompt_ids, self.prompt_mask, self.chosen, self.chosen_mask, self.rejected, self.rejected_mask)

    def to(self, device: str | torch.device) -> LabelledPairs:
        return LabelledPairs(*(t.to(device) for t in self.tensors()))

    @classmethod
    def concat(cls, parts: list[LabelledPairs]) -> LabelledPairs:
        return cls(*(torch.cat(columns) for columns in zip(*(p.tensors() for p in parts))))


def label(oracle: RewardOracle, labeler: Any, pairs: PairBatch, generator: torch.Generator) -> Tensor:
    """[B] True where the oracle prefers y_a. Both responses are scored in one call ([2B])."""
    scores = oracle.score(
        pairs.prompt_ids.repeat(2, 1),
        pairs.prompt_mask.repeat(2, 1),
        torch.cat([pairs.response_a, pairs.response_b]),
        torch.cat([pairs.mask_a, pairs.mask_b]),
    )
    score_a, score_b = scores.chunk(2)
    return labeler(score_a, score_b, generator)


def order(pairs: PairBatch, a_preferred: Tensor) -> LabelledPairs:
    prefer = a_preferred[:, None]
    return LabelledPairs(
        pairs.prompt_ids,
        pairs.prompt_mask,
        torch.where(prefer, pairs.response_a, pairs.response_b),
        torch.where(prefer, pairs.mask_a, pairs.mask_b),
        torch.where(prefer, pairs.response_b, pairs.response_a),
        torch.where(prefer, pairs.mask_b, pairs.mask_a),
    )


@dataclass
class RunRecord:
    """What one run accumulates across its trainers (iterative DPO has one per iteration)."""

    history: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    preferences: PreferenceLog = field(default_factory=PreferenceLog)
    stopwatch: Stopwatch = field(default_factory=Stopwatch)
    pairs_labelled: int = 0
    generation_passes: float = 0.0
    selection_passes: float = 0.0
    step_offset: int = 0  # training steps taken by earlier trainers of this run
    notes: dict[str, Any] = field(default_factory=dict)  # provenance that goes into the summary
    run_info: dict[str, Any] = field(default_factory=dict)  # how this process ran (timing.json, not the summary)
    rank: int = 0  # this process's rank in a distributed run
    world_size: int = 1

    @property
    def annotations(self) -> int:
        """Responses shown to the oracle: 2 per labelled pair (the paper's annotation cost)."""
        return 2 * self.pairs_labelled

    def flush_preferences(self, path: Path) -> None:
        """Save the pairs labelled since the last flush as an Arrow dataset, and start afresh."""
        self.preferences.save(path)
        self.preferences = PreferenceLog()

    def state(self) -> dict[str, Any]:
        """Everything but the stopwatch and the pair log, for caching a finished stage."""
        return {
            k: getattr(self, k)
            for k in ("history", "pairs_labelled", "generation_passes", "selection_passes", "step_offset")
        }

    def sample_and_label(
        self, sampler, labeler, oracle, policy, reference, prompts, masks, spec, generator, step,
        ledger: Ledger | None = None, key: tuple[int, int] = (0, 0),
    ) -> LabelledPairs:  # fmt: skip
        """Sample one pair per prompt, label it, record it; return the labelled pairs. With a
        ledger, a batch labelled before an interruption is taken from it (no sampling, no oracle
        query, the generator restored); a new batch is written to it before it is returned, so
        before any gradient step uses it."""
        entry = ledger.read(*key) if ledger else None
        if entry is not None:
            generator.set_state(entry["generator"])
            stored = {k: v.to(prompts.device) if torch.is_tensor(v) else v for k, v in entry["pairs"].items()}
            return self.add(step, PairBatch(**stored), entry["a_preferred"].to(prompts.device))
        with self.stopwatch("sampling"):
            pairs = sampler.sample(policy, reference, prompts, masks, spec, generator)
        with self.stopwatch("labelling"):
            a_preferred = label(oracle, labeler, pairs, generator)
        if ledger:
            ledger.write(*key, ledger_entry(step, pairs, a_preferred, generator))
        return self.add(step, pairs, a_preferred)

    def add(self, step: int, pairs: PairBatch, a_preferred: Tensor) -> LabelledPairs:
        """Count and log one batch of labelled pairs; return them as (chosen, rejected)."""
        self.preferences.add(step, pairs, a_preferred)
        self.pairs_labelled += len(pairs)
        self.generation_passes += pairs.generation_passes
        self.selection_passes += pairs.selection_passes
        return order(pairs, a_preferred)

    def preferences_name(self) -> str:
        """Where the labelled pairs go in the run directory: one dataset per rank when several."""
        return "preferences" if self.world_size == 1 else f"preferences/rank_{self.rank}"

    def recount(self, entries: list[dict[str, Any]]) -> None:
        """Pair and pass counts from ledger entries (pilaf_exp.ledger): this rank's own account."""
        self.pairs_labelled = sum(len(e["a_preferred"]) for e in entries)
        self.generation_passes = sum(e["pairs"]["generation_passes"] for e in entries)
        self.selection_passes = sum(e["pairs"]["selection_passes"] for e in entries)

    def cost_metrics(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """Annotations and passes per pair of the whole run (summed over ranks by `reduce`)."""
        totals = torch.tensor([self.pairs_labelled, self.generation_passes, self.selection_passes], dtype=torch.double)
        if reduce is not None:
            totals = reduce(totals)
        pairs, generation, selection = totals.tolist()
        return {
            "annotations/total": 2.0 * pairs,
            "sampling/forward_passes_per_pair": generation / max(pairs, 1),
            "sampling/selection_passes_per_pair": selection / max(pairs, 1),
        }


@dataclass
class Fitted:
    """What an algorithm hands back: the trained policy and the run's record."""

    policy: Any
    record: RunRecord
