"""What an algorithm is: it trains a policy from prompts, given the annotator, the evaluator and the
run's context (`training.online.OnlineDPO`, `training.iterative.IterativeDPO`; chosen by `algo=`)."""

from __future__ import annotations

from typing import Protocol

from torch import nn

from pilaf_exp.data.prompts import Prompts
from pilaf_exp.evaluation.evaluator import Evaluator
from pilaf_exp.labelling.annotate import Annotator
from pilaf_exp.training.context import RunContext
from pilaf_exp.training.record import Fitted


class Algorithm(Protocol):
    """build.py reads its settings: `beta` (evaluation's J), `temperature` (the annotator's decoding
    rule), `eval_every` and `last_step` (the evaluation schedule)."""

    beta: float
    temperature: float  # of the sampled pairs
    eval_every: int

    @property
    def last_step(self) -> int:
        """The run's last training step."""
        ...

    def fit(
        self,
        policy: nn.Module,
        reference: nn.Module,
        prompts: Prompts,
        annotator: Annotator,
        evaluator: Evaluator,
        run: RunContext,
    ) -> Fitted: ...
