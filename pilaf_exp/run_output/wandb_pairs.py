"""A few labelled pairs in the W&B run at every evaluation (`evaluation.schedule.EvalSchedule`):
what the oracle was shown and what it preferred, as a `wandb.Table` (prompt, both responses, their sources, both oracle
scores, the label)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from pilaf_exp.data.text import strip_padding
from pilaf_exp.infra.loggers import RunLogger
from pilaf_exp.infra.names import LABELLED_PAIRS
from pilaf_exp.labelling.annotate import score_both
from pilaf_exp.sampling.decoding import SOURCES
from pilaf_exp.sampling.pairs import PairBatch
from pilaf_exp.training.module import DPOModule

COLUMNS = ["step", "prompt", "response_a", "response_b", "source_a", "source_b", "score_a", "score_b", "label"]


def wandb_callbacks(loggers: Sequence[Any], tokenizer: Any = None) -> list[L.Callback]:
    """The callbacks the run's W&B loggers need (the labelled-pairs table); none without W&B."""
    return [
        LabelledPairsTable(logger, tokenizer, logger.pairs_table_rows)
        for logger in loggers
        if isinstance(logger, RunLogger) and logger.pairs_table_rows > 0
    ]


class LabelledPairsTable(L.Callback):
    """After the optimizer step of every step the evaluation schedule evaluates, the first `rows` pairs
    of the batch just trained on: online DPO's pairs as sampled (label = the response the oracle
    preferred), iterative DPO's round dataset preferred-first (label always "a"). Responses are text
    where the task has a tokenizer, else token ids. Every rank scores its rows (a sharded oracle
    needs them all); rank 0 logs."""

    def __init__(self, logger: RunLogger, tokenizer: Any, rows: int) -> None:
        self.logger, self.tokenizer, self.rows = logger, tokenizer, rows
        self.logged_step = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: DPOModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-step: the optimizer has not stepped yet
        step = pl_module.run_step
        due = pl_module.evaluator.schedule.due(step, trainer_end=trainer.global_step == trainer.max_steps)
        picked = latest_pairs(pl_module, batch) if due and step != self.logged_step else None
        if picked is None:
            return
        self.logged_step = step
        pairs, a_preferred = picked
        pairs = PairBatch.from_tensors(*(t[: self.rows].to(pl_module.device) for t in pairs.tensors()))
        with torch.inference_mode():
            scores = [score.float().cpu() for score in score_both(pl_module.oracle, pairs)]
        if trainer.is_global_zero:
            self.logger.log_media({LABELLED_PAIRS: self.table(step, pairs, a_preferred[: self.rows], *scores)}, step)

    def table(self, step: int, pairs: PairBatch, a_preferred: Tensor, score_a: Tensor, score_b: Tensor) -> Any:
        import wandb

        text = self.text
        columns = zip(
            text(pairs.prompt_ids, pairs.prompt_mask),
            text(pairs.response_a, pairs.mask_a),
            text(pairs.response_b, pairs.mask_b),
            [SOURCES[s] for s in pairs.source_a.tolist()],
            [SOURCES[s] for s in pairs.source_b.tolist()],
            score_a.tolist(),
            score_b.tolist(),
            ["a" if a else "b" for a in a_preferred.tolist()],
        )
        return wandb.Table(columns=COLUMNS, data=[[step, *row] for row in columns])

    def text(self, ids: Tensor, mask: Tensor) -> list[str]:
        rows = strip_padding(ids.cpu(), mask.cpu())
        if self.tokenizer is None:
            return [" ".join(map(str, row)) for row in rows]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)


def latest_pairs(pl_module: DPOModule, batch: Any) -> tuple[PairBatch, Tensor] | None:
    """The pairs of the step just taken and [B] "a preferred": online DPO's last labelled batch
    (record.preferences, sampling order), else a round dataset's batch (preferred-first)."""
    logged = pl_module.record.preferences.batches
    if logged:
        _, tensors, a_preferred = logged[-1]
        return PairBatch(**tensors), a_preferred
    if isinstance(batch, (tuple, list)) and len(batch) == len(PairBatch.TENSORS):
        pairs = PairBatch.from_tensors(*batch)
        return pairs, torch.ones(len(pairs), dtype=torch.bool)
    return None
