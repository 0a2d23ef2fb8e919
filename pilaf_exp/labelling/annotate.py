"""Sampling + labelling as one step: a pair per prompt from the sampler, a label from the oracle,
and the labelled batch kept in the annotation ledger (replayed from it after an interruption)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from pilaf_exp.infra.ledger import Ledger, ledger_entry
from pilaf_exp.infra.names import LABELLING, SAMPLING
from pilaf_exp.infra.timing import Stopwatch
from pilaf_exp.labelling.labelers import Labeler
from pilaf_exp.labelling.oracle import Oracle
from pilaf_exp.sampling.decoding import DecodeSpec
from pilaf_exp.sampling.pairs import PairBatch
from pilaf_exp.sampling.samplers import Sampler


def score_both(oracle: Oracle, pairs: PairBatch) -> tuple[Tensor, Tensor]:
    """The oracle's (calibrated) scores of y_a and of y_b ([B] each), both responses in one call ([2B])."""
    scores = oracle.score(
        pairs.prompt_ids.repeat(2, 1),
        pairs.prompt_mask.repeat(2, 1),
        torch.cat([pairs.response_a, pairs.response_b]),
        torch.cat([pairs.mask_a, pairs.mask_b]),
    )
    score_a, score_b = scores.chunk(2)
    return score_a, score_b


def label(oracle: Oracle, labeler: Labeler, pairs: PairBatch, generator: torch.Generator) -> Tensor:
    """[B] True where the oracle prefers y_a."""
    return labeler(*score_both(oracle, pairs), generator)


@dataclass
class Annotator:
    """Turns prompts into labelled pairs: sample (timed as "sampling"), label (timed as
    "labelling"), and keep them in the ledger before any gradient step can use them."""

    sampler: Sampler
    labeler: Labeler
    oracle: Oracle
    spec: DecodeSpec  # how responses are decoded (temperature, length, engine)
    stopwatch: Stopwatch

    def with_sampler(self, sampler: Sampler) -> Annotator:
        return replace(self, sampler=sampler)

    def __call__(
        self,
        policy: nn.Module,
        reference: nn.Module,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        generator: torch.Generator,
        ledger: Ledger | None = None,
        key: tuple[int, int] = (0, 0),
        step: int = 0,
    ) -> tuple[PairBatch, Tensor]:
        """The pairs and [B] "y_a preferred". With a ledger, a batch labelled before an interruption
        is taken from it under `key` (no sampling, no oracle query, the generator restored); a new
        batch is written to it under `key` before it is returned."""
        entry = ledger.read(*key) if ledger else None
        if entry is not None:
            generator.set_state(entry["generator"])
            device = prompt_ids.device
            stored = {k: v.to(device) if torch.is_tensor(v) else v for k, v in entry["pairs"].items()}
            return PairBatch(**stored), entry["a_preferred"].to(device)
        with self.stopwatch(SAMPLING):
            pairs = self.sampler.sample(policy, reference, prompt_ids, prompt_mask, self.spec, generator)
        with self.stopwatch(LABELLING):
            a_preferred = label(self.oracle, self.labeler, pairs, generator)
        if ledger:
            ledger.write(*key, ledger_entry(step, pairs, a_preferred, generator))
        return pairs, a_preferred
