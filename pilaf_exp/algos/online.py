"""Online DPO (Guo et al. 2024): every step samples and labels pairs from the current policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pilaf_exp.data import prompt_stream
from pilaf_exp.dpo_module import OnlineDPOModule
from pilaf_exp.labelling import Fitted, RunRecord

if TYPE_CHECKING:
    from pilaf_exp.experiment import Experiment


@dataclass
class OnlineDPO:
    beta: float
    steps: int
    batch_size: int  # pairs per step, per rank
    lr: float
    temperature: float
    eval_every: int
    micro_batch_size: int | None = None  # pairs per forward/backward; the rest accumulates
    name: ClassVar[str] = "online"

    def fit(self, exp: Experiment) -> Fitted:
        spec = exp.decode_spec(self.temperature)
        record = RunRecord()
        policy = exp.new_policy()
        micro = self.micro_batch_size or self.batch_size

        def loader(rank: int, world_size: int):  # built once the trainer knows the ranks
            return prompt_stream(exp.task.train, self.batch_size, self.steps, exp.seed, rank, world_size, micro)

        module = OnlineDPOModule(
            policy, exp.reference, exp.oracle, exp.evaluator(spec, self.beta), record,
            beta=self.beta, lr=self.lr, eval_every=self.eval_every,
            sampler=exp.sampler, labeler=exp.labeler, spec=spec, seed=exp.seed, make_loader=loader,
        )  # fmt: skip
        trainer = exp.trainer(
            max_steps=self.steps, max_epochs=1, accumulate_grad_batches=self.batch_size // micro,
            use_distributed_sampler=False,  # the prompt stream splits itself across ranks
        )  # fmt: skip
        with record.stopwatch("fit"):
            trainer.fit(module)
        record.flush_preferences(exp.output_dir / record.preferences_name())
        return Fitted(policy, record)
