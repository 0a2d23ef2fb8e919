"""When a run evaluates, in one place: the training module, the W&B pairs table and the exact
evaluation all read the same `EvalSchedule`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalSchedule:
    """Sampled evaluation at step 0 (the starting policy), every `every` steps, at the end of each
    trainer (an iterative round) and at the run's `last` step; exact evaluation at step 0, every
    `exact_every` steps (None: never in between) and at the last step."""

    every: int  # algo.eval_every
    last: int  # the run's last training step
    exact_every: int | None = None  # eval.exact_every

    def due(self, step: int, trainer_end: bool = False) -> bool:
        """Whether the policy after `step` is evaluated (`trainer_end`: this trainer's last step)."""
        return step % self.every == 0 or step == self.last or trainer_end

    def exact_due(self, step: int) -> bool:
        return step in (0, self.last) or bool(self.exact_every and step % self.exact_every == 0)
