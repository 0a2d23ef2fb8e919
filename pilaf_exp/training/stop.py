"""Stopping on a signal, together: SIGTERM (and SIGUSR1, turned into one by `infra.signals`) stops
every rank after the same batch, where the training module saves the run."""

from __future__ import annotations

import signal
import threading
from typing import Any

import lightning as L
import torch


class StopTogether(L.Callback):
    """Lightning's own SIGTERM handler broadcasts from inside the signal handler (a collective at a
    random point of a step) and makes each rank stop on its own flag: ranks then wait for each other
    forever or lose their peer mid-step. This one only notes the signal; at every batch boundary all
    ranks decide together (one all-reduce of the local flags), and a rank that was not signalled yet
    is marked as if it were, so every rank saves the same checkpoint (`DPOModule.on_train_batch_end`,
    which runs after this callback's hook) and leaves Lightning's loop after the same batch."""

    def __init__(self) -> None:
        self.signalled = False  # this rank received SIGTERM since its trainer started
        self.trainer: L.Trainer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signalled, self.trainer = False, trainer
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.note_signal)

    def note_signal(self, signum: int, frame: Any) -> None:
        launcher = self.trainer.strategy.launcher if self.trainer is not None else None
        if not self.signalled and launcher is not None:  # ranks this process started get it too, as with Lightning's
            launcher.kill(signum)
        self.signalled = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stop = self.signalled or bool(trainer.received_sigterm)
        if trainer.world_size > 1:
            flag = torch.tensor([float(stop)], device=pl_module.device)
            stop = trainer.strategy.reduce(flag, reduce_op="sum").item() > 0
        if stop:  # Lightning leaves its loop after this batch, on every rank alike
            trainer._signal_connector.received_sigterm = True
