"""Online DPO (Guo et al. 2024): every step samples and labels pairs from the current policy."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.data.stream import PromptStream
from pilaf_exp.evaluation.evaluator import Evaluator
from pilaf_exp.infra.names import FIT
from pilaf_exp.labelling.annotate import Annotator
from pilaf_exp.labelling.preference_log import PreferenceLog
from pilaf_exp.training.context import RunContext
from pilaf_exp.training.module import OnlineDPOModule
from pilaf_exp.training.record import Fitted, RunRecord
from pilaf_exp.training.resume import latest_checkpoint, resume_from
from pilaf_exp.training.settings import DPOSettings, Training


@dataclass(kw_only=True)
class OnlineDPO(DPOSettings):
    steps: int  # optimizer steps; each labels batch_size pairs per rank

    @property
    def last_step(self) -> int:
        return self.steps

    def fit(
        self,
        policy: nn.Module,
        reference: nn.Module,
        prompts: Prompts,
        annotator: Annotator,
        evaluator: Evaluator,
        run: RunContext,
    ) -> Fitted:
        """Train `policy` (the initial policy, trainable) on `prompts` (the train split)."""
        record = RunRecord()
        resumed = latest_checkpoint(run.checkpointer, run.resume)
        start = resume_from(policy, record, resumed) if resumed is not None else 0
        training = Training(self, policy, reference, annotator, evaluator, run, record)
        module = OnlineDPOModule(training, resume=resumed[1] if resumed else None)
        stream = PromptStream(prompts, self.batch_size, self.steps, run.seed, self.micro, start)
        trainer = run.make_trainer(
            max_steps=self.steps - start,
            max_epochs=1,
            accumulate_grad_batches=self.accumulate,
            use_distributed_sampler=False,  # the prompt stream splits itself across ranks
        )
        with run.stopwatch(FIT):
            trainer.fit(module, datamodule=stream)
        # Every pair of the run, including those labelled before an interruption, from the ledger.
        record.flush_preferences(run.output_dir / record.preferences_name(), PreferenceLog.from_ledger(module.ledger))
        return Fitted(policy, record)
