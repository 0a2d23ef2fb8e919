"""What every DPO trainer of a run is made from: the algorithm's DPO settings (one dataclass that
`OnlineDPO` and `IterativeDPO` extend) and the run's parts they act on (`Training`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.optim import AdamW, Optimizer

from pilaf_exp.evaluation.evaluator import Evaluator
from pilaf_exp.labelling.annotate import Annotator
from pilaf_exp.training.context import RunContext
from pilaf_exp.training.record import RunRecord


@dataclass(kw_only=True)
class DPOSettings:
    """The keys both conf/algo/*.yaml share: DPO's loss and optimisation, and how the run samples
    and evaluates (build.py reads `temperature` and `eval_every`)."""

    beta: float
    batch_size: int  # pairs per optimizer step (online DPO: per rank)
    lr: float
    temperature: float  # of the sampled pairs: the annotator's decoding rule
    eval_every: int  # evaluation every this many steps (evaluation.schedule.EvalSchedule)
    micro_batch_size: int | None = None  # pairs per forward/backward; the rest accumulates
    weight_decay: float = 0.0  # the optimizer's decay toward zero (not toward the reference)
    optimizer: Callable[..., Optimizer] = AdamW  # (params, lr, weight_decay) -> optimizer

    @property
    def micro(self) -> int:
        """Pairs per forward/backward."""
        return self.micro_batch_size or self.batch_size

    @property
    def accumulate(self) -> int:
        """Micro-batches per optimizer step."""
        return self.batch_size // self.micro


@dataclass(frozen=True)
class Training:
    """The parts every trainer of one run acts on; one object, so a module or a round takes one."""

    settings: DPOSettings
    policy: nn.Module  # trainable, carried from trainer to trainer
    reference: nn.Module  # pi_ref, frozen
    annotator: Annotator  # sampler + oracle labels (its oracle also scores the W&B pairs table)
    evaluator: Evaluator
    run: RunContext
    record: RunRecord
