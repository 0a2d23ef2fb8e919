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
    beta: float
    temperature: float  # of the sampled pairs (the annotator's decoding rule)

    def fit(
        self,
        policy: nn.Module,
        reference: nn.Module,
        prompts: Prompts,
        annotator: Annotator,
        evaluator: Evaluator,
        run: RunContext,
    ) -> Fitted: ...
