"""Online DPO (Guo et al. 2024): every step samples and labels pairs from the current policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pilaf_exp.data import prompt_stream
from pilaf_exp.online import OnlineDPOModule

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

    def fit(self, exp: Experiment) -> OnlineDPOModule:
        spec = exp.task.decode_spec(self.temperature)
        module = OnlineDPOModule(
            policy=exp.new_policy(),
            reference=exp.reference,
            oracle=exp.oracle,
            sampler=exp.sampler,
            labeler=exp.labeler,
            evaluator=exp.evaluator(spec, self.beta),
            spec=spec,
            beta=self.beta,
            lr=self.lr,
            eval_every=self.eval_every,
            seed=exp.seed,
        )
        prompts = exp.task.train_prompts
        loader = prompt_stream(prompts, exp.task.mask_of(prompts), self.batch_size, self.steps, exp.seed)
        with module.stopwatch("fit"):
            exp.trainer(max_steps=self.steps, max_epochs=1).fit(module, loader)
        return module
