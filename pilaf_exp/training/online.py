"""Online DPO (Guo et al. 2024): every step samples and labels pairs from the current policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.optim import AdamW, Optimizer

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


@dataclass
class OnlineDPO:
    beta: float
    steps: int
    batch_size: int  # pairs per step, per rank
    lr: float
    temperature: float  # of the sampled pairs (the annotator's decode spec)
    eval_every: int
    micro_batch_size: int | None = None  # pairs per forward/backward; the rest accumulates
    weight_decay: float = 0.0  # the optimizer's decay toward zero (not toward the reference)
    optimizer: Callable[..., Optimizer] = AdamW  # (params, lr, weight_decay) -> optimizer

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
        micro = self.micro_batch_size or self.batch_size
        resumed = latest_checkpoint(run.checkpointer, run.resume)
        start = resume_from(policy, record, resumed) if resumed is not None else 0
        module = OnlineDPOModule(
            policy,
            reference,
            annotator.oracle,
            evaluator,
            record,
            run.stopwatch,
            beta=self.beta,
            lr=self.lr,
            eval_every=self.eval_every,
            last_step=self.steps,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            checkpointer=run.checkpointer,
            resume_optimizer=resumed[1]["optimizer_states"][0] if resumed else None,
            annotator=annotator,
            seed=run.seed,
            ledger_dir=run.output_dir / "ledger",
        )
        stream = PromptStream(prompts, self.batch_size, self.steps, run.seed, micro, start)
        trainer = run.make_trainer(
            max_steps=self.steps - start,
            max_epochs=1,
            accumulate_grad_batches=self.batch_size // micro,
            use_distributed_sampler=False,  # the prompt stream splits itself across ranks
        )
        with run.stopwatch(FIT):
            trainer.fit(module, datamodule=stream)
        # Every pair of the run, including those labelled before an interruption, from the ledger.
        record.flush_preferences(run.output_dir / record.preferences_name(), PreferenceLog.from_ledger(module.ledger))
        return Fitted(policy, record)
