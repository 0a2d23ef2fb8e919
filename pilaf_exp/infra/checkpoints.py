"""Lightning checkpoints of a run: written atomically every N steps and when the job is signalled,
and the latest readable one found again on resume (a damaged latest falls back to the one before)."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from pilaf_exp.infra.atomic import publish
from pilaf_exp.infra.errors import ConfigError

log = logging.getLogger(__name__)
NAME = re.compile(r"step_(\d+)\.ckpt$")  # a checkpoint's file name: its training step, 8 digits


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.ckpt"


def checkpoint_step(path: Path) -> int | None:
    """The training step in a checkpoint's file name, None when the name is not one of ours."""
    match = NAME.search(path.name)
    return int(match.group(1)) if match else None


class Checkpointer:
    def __init__(self, directory: Path, every_n_steps: int | None, keep: int = 2) -> None:
        self.directory, self.every_n_steps, self.keep = directory, every_n_steps, keep

    def due(self, step: int) -> bool:
        return bool(self.every_n_steps) and step > 0 and step % self.every_n_steps == 0

    def save(self, trainer: L.Trainer, step: int) -> Path:
        """The trainer's full state (weights, optimizer, our extras via on_save_checkpoint) at `step`."""
        path = self.directory / checkpoint_name(step)
        staging = path.with_name(f".{path.name}.tmp")
        trainer.save_checkpoint(staging, weights_only=False)  # Lightning's format; written by global rank 0
        if not trainer.is_global_zero:
            return path
        publish(staging, path)
        for old in self.saved()[: -self.keep]:  # keep the newest `keep`: a damaged latest has a fallback
            old.unlink(missing_ok=True)
        return path

    def has(self, step: int) -> bool:
        return (self.directory / checkpoint_name(step)).exists()

    def saved(self) -> list[Path]:
        found = [p for p in self.directory.glob("step_*.ckpt") if checkpoint_step(p) is not None]
        return sorted(found, key=checkpoint_step)

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that loads, or None if there is none; never silently nothing when
        checkpoints exist but none can be read."""
        candidates = self.saved()
        for path in reversed(candidates):
            try:
                return path, torch.load(path, map_location="cpu", weights_only=False)
            except Exception as error:  # truncated or corrupted file
                log.warning("checkpoint %s is unreadable (%s); trying the one before", path, type(error).__name__)
        if candidates:
            raise ConfigError(
                f"no readable checkpoint among {len(candidates)} in {self.directory}; refusing to start over "
                "from scratch: move them away or choose another output_dir"
            )
        return None


def rng_states() -> dict[str, Any]:
    """The process-wide random states (torch, numpy, python), saved with every checkpoint."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
