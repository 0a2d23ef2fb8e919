"""What an algorithm needs besides the models and the data: where the run writes, how it resumes,
how trainers are made. Plain values and factories, built once per run by `pilaf_exp.build`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from pilaf_exp.infra.checkpoints import Checkpointer
from pilaf_exp.infra.timing import Stopwatch


@dataclass(frozen=True)
class RunContext:
    seed: int  # fixes prompts, sampling and labelling noise
    output_dir: Path
    checkpointer: Checkpointer
    resume: bool  # continue from the latest readable checkpoint in output_dir (resume=auto)
    make_trainer: Callable[..., L.Trainer]  # the configured lightning.Trainer with loggers and callbacks attached
    loggers: list[Any]  # Lightning loggers (also attached to every trainer)
    stopwatch: Stopwatch  # where the run's time goes (timing.json)
    processes: int  # ranks the trainers will run (trainer.devices x num_nodes); 0 when not fixed by the config
    cache_dir: Path  # stages shared between runs (iterative DPO's round 1)
    cache_spec: dict  # what fixes the reference and the oracle: part of every shared stage's key
