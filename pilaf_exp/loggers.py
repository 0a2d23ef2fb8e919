"""Experiment loggers."""

from __future__ import annotations

import os

from lightning.pytorch.loggers import WandbLogger


def wandb_logger(
    save_dir: str, project: str, group: str | None = None, tags: list[str] | None = None, **kwargs
) -> WandbLogger:
    """W&B logger, offline unless the user has given a key (WANDB_API_KEY) or set WANDB_MODE.

    The offline run directory (save_dir/wandb/offline-run-*) is real W&B output: upload it
    later with `wandb sync`.
    """
    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return WandbLogger(save_dir=save_dir, project=project, group=group, tags=list(tags or []), mode=mode, **kwargs)
