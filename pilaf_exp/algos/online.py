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
    batch_size: int
    lr: float
    temperature: float
    eval_every: int
    name: ClassVar[str] = "online"

    def fit(self, exp: Experiment) -> Fitted:
        spec = exp.task.decode_spec(self.temperature)
        record = RunRecord()
        policy = exp.new_policy()
        module = OnlineDPOModule(
            policy, exp.reference, exp.oracle, exp.evaluator(spec, self.beta), record,
            beta=self.beta, lr=self.lr, eval_every=self.eval_every,
            sampler=exp.sampler, labeler=exp.labeler, spec=spec, seed=exp.seed,
        )  # fmt: skip
        prompts = exp.task.train_prompts
        loader = prompt_stream(prompts, exp.task.mask_of(prompts), self.batch_size, self.steps, exp.seed)
        with record.stopwatch("fit"):
            exp.trainer(max_steps=self.steps, max_epochs=1).fit(module, loader)
        record.flush_preferences(exp.output_dir / "preferences")
        return Fitted(policy, record)
